"""Rounds (`bench.rounds=N`): every job measured N times, each round in a new shuffled order;
medians as headline, per-round values kept, the A/B paired by round so that drift between
rounds is not taken for a difference; resume keeps the rounds already done."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import QUICK, only_sweep_dir, run_cli

from hydra_plugins.inference_sweep.rounds_sweeper import round_plan
from sweep import analysis as an
from sweep import rounds
from sweep.result import ROUNDS_FILE, JobResult, read_rounds
from sweep.significance import compare, compare_rounds
from sweep.sources import Sweep, load_dir, to_row

DRIFT = [1.0, 1.45, 0.7, 1.2]  # the machine's speed in each round: +-45%, as on a lent H200


def _job(tmp_path, name, flag, ms_per_round, noise=0.002, seed=0):
    """A job measured in rounds by a runtime stub whose speed depends on the round."""
    rng = np.random.default_rng(seed)
    job_dir = tmp_path / name
    job_dir.mkdir()
    params = {"runtime": "torch", "batch": 1, "flags.cudnn_benchmark": flag}
    result = None
    for number, ms in enumerate(ms_per_round, start=1):
        calls = ms * (1 + noise * rng.standard_normal(200))
        latest = JobResult(job=name, status="ok", params=params,
                           metrics={"infer_ms_per_img": float(calls.mean()),
                                    "infer_ms_p50": float(np.median(calls)),
                                    "fps": float(1e3 / calls.mean()), "infer_cv_pct": 0.2,
                                    "correct": 1})
        records = rounds.record(job_dir, number, "d", latest)
        result = rounds.combine(latest, records, len(ms_per_round))
    return to_row(result.to_json(), name), calls.tolist()


def _sweep(tmp_path, b_speedup):
    a, sa = _job(tmp_path, "0_a", False, [2.0 * d for d in DRIFT], seed=1)
    b, sb = _job(tmp_path, "1_b", True, [2.0 * d / b_speedup for d in DRIFT], seed=2)
    return Sweep("s", [a, b], ["runtime", "batch", "flags.cudnn_benchmark"],
                 {"0_a": sa, "1_b": sb})


def test_rounds_combine_to_medians_with_a_between_round_ci(tmp_path):
    row, _ = _job(tmp_path, "0_a", False, [2.0 * d for d in DRIFT])
    ms = [2.0 * d for d in DRIFT]
    assert row["infer_ms_per_img"] == pytest.approx(float(np.median(ms)), rel=0.01)
    assert row["rounds"] == 4 and row["rounds_done"] == [1, 2, 3, 4]
    assert row["infer_ms_per_img_rounds_ci95_low"] < np.mean(ms) < \
        row["infer_ms_per_img_rounds_ci95_high"]
    values = rounds.values_of(row)
    assert values["rounds"] == [1, 2, 3, 4]
    assert values["infer_ms_per_img"] == pytest.approx(ms, rel=0.01)
    assert len(read_rounds(tmp_path / "0_a")) == 4


def test_drift_between_rounds_is_no_real_difference(tmp_path):
    """Same configuration twice; the machine drifts between rounds. Within-job samples call
    the two 'different' (their spread is tiny); paired by round, there is no difference."""
    sweep = _sweep(tmp_path, b_speedup=1.0)
    a, b = sweep.rows
    # one round, the two jobs measured at different moments (drift 1.45 then 0.7): their own
    # samples call them different, which is what a one-round verdict would wrongly say
    rng = np.random.default_rng(3)
    within = compare(list(2.0 * DRIFT[1] * (1 + 0.002 * rng.standard_normal(200))),
                     list(2.0 * DRIFT[2] * (1 + 0.002 * rng.standard_normal(200))))
    assert within.verdict == "different"
    pair = an.ab_pairs(sweep, "flags.cudnn_benchmark")[0]
    main = pair.main()
    assert main.test.basis == "rounds" and main.test.n_a == 4
    assert main.kind() == "same", main.verdict(pair.b_name)
    assert "between rounds" in an.noise_basis(sweep)
    lead = an.recommend(sweep)
    assert "beyond noise" not in lead and "within the variation between rounds" in lead


def test_a_real_difference_shows_through_the_drift(tmp_path):
    sweep = _sweep(tmp_path, b_speedup=1.10)
    pair = an.ab_pairs(sweep, "flags.cudnn_benchmark")[0]
    main = pair.main()
    assert main.kind() == "better", main.verdict(pair.b_name)
    assert main.test.delta_pct == pytest.approx(-100 * (1 - 1 / 1.10), abs=0.5)
    assert "holds round by round" in an.recommend(sweep)


def test_compare_rounds_needs_two_rounds():
    assert compare_rounds([1.0], [2.0]).verdict == "too few samples"
    assert compare_rounds([1.0, 1.0], [1.0, 1.0]).verdict == "no real difference"


def test_an_unsteady_job_is_never_called_beyond_noise(tmp_path):
    """One round, but the winner's timing CV is 86%: the lead is not 'beyond noise'."""
    a = {"job_dir": "0_a", "job": "a", "status": "ok", "runtime": "torch", "batch": 1,
         "fps": 3.4, "infer_ms_p50": 293.0, "infer_cv_pct": 3.0, "correct": 1}
    b = {"job_dir": "1_b", "job": "b", "status": "ok", "runtime": "onnx", "batch": 1,
         "fps": 71.0, "infer_ms_p50": 14.0, "infer_cv_pct": 86.0, "correct": 1}
    rng = np.random.default_rng(0)
    sweep = Sweep("s", [a, b], ["runtime", "batch"],
                  {"0_a": list(293 + rng.random(50)), "1_b": list(14 + rng.random(50))})
    text = an.recommend(sweep)
    assert "beyond noise" not in text and "timing CV is 86%" in text


def test_each_round_visits_the_jobs_in_a_new_order():
    plan = round_plan(6, 4, seed=0)
    assert all(sorted(order) == list(range(6)) for order in plan)
    assert len({tuple(order) for order in plan}) > 1


@pytest.mark.slow
def test_a_sweep_in_rounds_through_a_multirun_and_its_resume(tmp_path, cache_dir):
    args = ["-m", "runtime=torch,onnx", "bench.rounds=3", "tracking.experiment=rounds", *QUICK]
    proc = run_cli(args, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    info = json.loads((sweep_dir / "sweep.json").read_text())
    assert info["rounds"] == 3 and len(info["round_plan"]) == 3
    visits = []  # (start time, job, round) of all six measurements
    for job_dir in sorted(p for p in sweep_dir.iterdir() if (p / ROUNDS_FILE).exists()):
        records = read_rounds(job_dir)
        assert [r["round"] for r in records] == [1, 2, 3]
        assert all(r["status"] == "ok" for r in records)
        visits += [(r["started"], int(job_dir.name.split("_")[0]), r["round"]) for r in records]
        result = json.loads((job_dir / "result.json").read_text())
        assert result["metrics"]["rounds"] == 3
        assert len(rounds.values_of(result["info"])["fps"]) == 3
    assert len(visits) == 6
    order = [(rnd, job) for _, job, rnd in sorted(visits)]
    planned = [(n, job) for n, jobs in enumerate(info["round_plan"], start=1) for job in jobs]
    assert order == planned  # visited as the sweeper planned: one shuffled order per round
    assert "[round 3/3]" in proc.stdout
    sweep = load_dir(sweep_dir)
    assert all(r.get("rounds") == 3 for r in sweep.rows)
    md = (sweep_dir / "report.md").read_text()
    assert "FPS 95% CI between rounds" in md and "median of 3 rounds" in md

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["rounds"])
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(children) == 2 and set(children["metrics.rounds"]) == {3.0}  # logged once each

    # resume: one round of one job lost (a killed sweep); the re-run measures only that one
    job0 = next(p for p in sweep_dir.iterdir() if p.name.startswith("0_"))
    kept = [r for r in read_rounds(job0) if r["round"] != 2]
    (job0 / ROUNDS_FILE).write_text(json.dumps(kept))
    again = run_cli([*args, f"hydra.sweep.dir={sweep_dir}", "isolation=process"], tmp_path,
                    cache_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped, finished before") == 5
    assert [r["round"] for r in read_rounds(job0)] == [1, 2, 3]
    runs = mlflow.search_runs(experiment_names=["rounds"])
    assert runs["tags.mlflow.parentRunId"].notna().sum() == 2  # no second run for job 0
