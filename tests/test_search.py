"""`hydra/sweeper=optuna` as the README runs it: a trial that meets no rate under its SLO (NaN
objective) is told to the study as failed and the search goes on, every search ends with its
report and a closed parent run, and what would break a search is refused before it starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import QUICK, run_cli
from mlflow.tracking import MlflowClient

SEARCH = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize",
          "hydra.sweeper.sampler.seed=1", "hydra.sweeper.n_jobs=1"]
# a serving search small enough for CI: every trial a short server run
SERVER = ["scenario=server", "scenario.duration_s=0.2", "scenario.min_requests=10"]


def _store(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def _runs(root: Path, experiment: str) -> tuple[list, list]:
    client = MlflowClient(_store(root))
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id])
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    return parents, [r for r in found if r not in parents]


def _results(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/result.json"))]


@pytest.mark.slow
def test_trials_that_meet_no_rate_under_the_slo_fail_and_the_search_goes_on(tmp_path, cache_dir):
    proc = run_cli([*SEARCH, "hydra.sweeper.n_trials=3", "hydra.sweeper.max_failure_rate=1.0",
                    "batch=choice(1,2)", *SERVER, "scenario.slo_ms=0.01",  # met by no rate
                    # p90: a step needs ~30 requests for its bound, not p99's ~300
                    "scenario.slo_percentile=90",
                    f"tracking.uri={_store(tmp_path)}", "tracking.experiment=nan",
                    "hydra.sweep.dir=multirun/s", *QUICK], tmp_path, cache_dir)
    sweep_dir, said = tmp_path / "multirun" / "s", proc.stdout + proc.stderr  # Hydra logs: stdout
    assert "Traceback" not in said, said[-3000:]
    assert proc.returncode == 1, said[-3000:]  # no trial completed: no best value
    results = _results(sweep_dir)
    assert len(results) == 3  # n_trials ran, every one
    assert all(r["info"].get("slo_result") for r in results)
    assert said.count("Failed experiment") == 3  # each told to Optuna as failed, and why
    assert "no arrival rate meets" in said
    assert "all 3 trial(s) failed, so there is no best configuration" in said
    assert (sweep_dir / "report.md").stat().st_size > 0
    parents, children = _runs(tmp_path, "nan")
    assert [p.info.status for p in parents] == ["FAILED"]
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)


def test_a_failed_trial_stops_a_search_that_allows_none_with_its_report(tmp_path, cache_dir):
    # a key no job accepts fails each trial at once (no model is built)
    proc = run_cli([*SEARCH, "hydra.sweeper.n_trials=3", "batch=choice(1,2)", "+no_such_key=1",
                    f"tracking.uri={_store(tmp_path)}", "tracking.experiment=stop",
                    "hydra.sweep.dir=multirun/s", *QUICK], tmp_path, cache_dir)
    said = proc.stdout + proc.stderr  # Hydra logs to stdout
    assert "Traceback" not in said, said[-3000:]
    assert proc.returncode == 1, said[-3000:]
    assert "more than hydra.sweeper.max_failure_rate=0.0 allows" in said
    assert "hydra.sweeper.max_failure_rate=1.0" in said  # what to type
    sweep_dir = tmp_path / "multirun" / "s"
    assert len(_results(sweep_dir)) == 1  # stopped at the first failed trial
    assert (sweep_dir / "report.md").exists()
    parents, children = _runs(tmp_path, "stop")
    assert [p.info.status for p in parents] == ["FAILED"] and len(children) == 1


def test_what_would_break_a_search_is_refused_before_it_starts(tmp_path, cache_dir):
    cases = {
        "hydra.sweeper.n_trials=0": "hydra.sweeper.n_trials=0 is not valid: a whole number >= 1",
        "hydra.sweeper.max_failure_rate=2": "hydra.sweeper.max_failure_rate=2",
        "batch=interval(1,64)": "type 'batch=int(interval(1,64))'",
        "runtime=choice(torch,onxx)": "runtime='onxx' is not valid",
    }
    for override, said in cases.items():
        proc = run_cli([*SEARCH, override, "hydra.sweep.dir=multirun/r", *QUICK], tmp_path,
                       cache_dir)
        assert proc.returncode == 2, (override, proc.stderr[-3000:])
        assert said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "multirun" / "r").exists()  # no record, no parent run


def test_a_resume_into_a_search_must_draw_its_trials_again(tmp_path, cache_dir):
    """A folder that holds a search run with seed 1: a re-run without that seed would mix new
    trials with its old ones."""
    job = tmp_path / "multirun" / "s" / "0_torch-resnet18-32-b1"
    (job / ".hydra").mkdir(parents=True)
    (job / "result.json").write_text("{}")
    (job / ".hydra" / "hydra.yaml").write_text("hydra:\n  sweeper:\n    sampler:\n      seed: 1\n")
    for seed, said in (([], "this run sets no seed"), (["hydra.sweeper.sampler.seed=2"],
                                                        "this run's seed is 2")):
        args = [a for a in SEARCH if "seed" not in a] + seed
        proc = run_cli([*args, "batch=choice(1,2)", "hydra.sweep.dir=multirun/s", *QUICK],
                       tmp_path, cache_dir)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert said in proc.stderr and "hydra.sweeper.sampler.seed=1" in proc.stderr
