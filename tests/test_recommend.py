"""The recommendation answers the question the sweep asked (under its SLO; a concurrency sweep by
served qps and p99), and a figure that cannot be right keeps its job out of every verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweep import analysis as an
from sweep import rounds
from sweep.report import Options, main, write_reports
from sweep.result import JobResult, save_result
from sweep.significance import ci95_log
from sweep.sources import load_dir

SLO = "p99 <= 100 ms (its upper 95% bound)"
BASE = {"runtime": "torch", "model": "resnet18", "resolution": 224, "precision": "fp32",
        "pipeline": "current", "device": "cpu", "bench.rounds": 1}


def save_job(root: Path, n: int, params: dict, metrics: dict, info: dict | None = None) -> None:
    """A finished job folder, written by the job's own result.save_result."""
    job = "-".join(f"{v}" for v in params.values())
    job_dir = root / f"{n}_{job}"
    job_dir.mkdir(parents=True)
    result = JobResult(job=job, status="ok", params={**BASE, **params},
                       metrics={"correct": 1.0, **metrics}, info=dict(info or {}))
    assert save_result(result, job_dir)


def _section(md: str, heading: str) -> str:
    return md.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


# --- under the SLO the jobs searched with ---------------------------------------------------


@pytest.fixture
def slo_sweep(tmp_path) -> Path:
    """Three jobs searched under p99 <= 100 ms: batch 8 has by far the highest offline FPS but
    met no rate under the SLO; batch 4 serves the most under it."""
    root = tmp_path / "slo"
    server = {"scenario": "server", "scenario.slo_ms": 100.0, "scenario.slo_percentile": 99.0}
    save_job(root, 0, {"batch": 1, **server},
             {"fps": 200.0, "max_qps_at_slo": 50.0, "server_qps": 49.0, "latency_ms_p99": 80.0},
             {"slo": SLO, "capacity_qps": 190.0})
    save_job(root, 1, {"batch": 4, **server},
             {"fps": 500.0, "max_qps_at_slo": 120.0, "server_qps": 118.0,
              "latency_ms_p99": 95.0, "energy_j_per_img": 0.25, "served_j_per_img": 0.4},
             {"slo": SLO, "capacity_qps": 480.0})
    save_job(root, 2, {"batch": 8, **server}, {"fps": 2000.0},
             {"slo": SLO, "capacity_qps": 1900.0,
              "slo_result": f"no arrival rate meets {SLO}: even 21.4 qps did not"})
    return root


def test_a_sweep_with_an_slo_is_recommended_under_it_without_being_asked(slo_sweep):
    write_reports(slo_sweep, opts=Options())  # what the sweep's end writes: no --slo-ms
    md = (slo_sweep / "report.md").read_text()
    text = _section(md, "Recommendation").strip()
    assert text.startswith("Deploy `runtime=torch model=resnet18 resolution=224 batch=4")
    assert f"the highest max_qps_at_slo under {SLO}" in text
    # the energy at the load it recommends, not the offline figure
    assert "120.0 qps at p99 95 ms, 0.4 J/image at that load (served_j_per_img)" in text
    assert "batch=8" not in text  # the fastest offline, but it met no rate under its SLO
    assert "1 job(s) met no rate under it and are not candidates" in text
    summary = json.loads((slo_sweep / "summary.json").read_text())
    assert summary["recommendation"] == text


def test_the_automatic_slo_recommendation_is_the_one_slo_ms_gives(slo_sweep, tmp_path, capsys):
    write_reports(slo_sweep)
    auto = json.loads((slo_sweep / "summary.json").read_text())["recommendation"]
    assert main([str(slo_sweep), "--slo-ms", "100", "--out", str(tmp_path / "asked")]) == 0
    asked = json.loads((tmp_path / "asked" / "summary.json").read_text())["recommendation"]
    assert asked == auto and auto in capsys.readouterr().out


def test_a_job_that_met_no_rate_is_never_recommended_even_alone(tmp_path):
    root = tmp_path / "none"
    save_job(root, 0, {"batch": 8, "scenario": "server", "scenario.slo_ms": 5.0},
             {"fps": 2000.0}, {"slo": "p99 <= 5 ms (its upper 95% bound)",
                               "slo_result": "no arrival rate meets p99 <= 5 ms: even 21.4 qps "
                                             "did not"})
    text = an.recommendation(load_dir(root))
    assert text.startswith("Deploy none under p99 <= 5 ms (its upper 95% bound)")
    assert "even 21.4 qps did not" in text and "Deploy `" not in text


# --- a concurrency sweep: by served qps and p99 ----------------------------------------------


@pytest.fixture
def concurrency_sweep(tmp_path) -> Path:
    """The same model at 1, 4 and 16 clients; the clients=1 job's offline FPS is 3x the others'
    (noise: the offline figure does not depend on clients), served qps saturates at 4."""
    root = tmp_path / "conc"
    for n, (clients, fps, qps, p99) in enumerate([(1, 3000.0, 300.0, 4.0),
                                                  (4, 1000.0, 800.0, 6.0),
                                                  (16, 1000.0, 820.0, 25.0)]):
        save_job(root, n, {"batch": 4, "scenario": "concurrency", "scenario.clients": clients},
                 {"fps": fps, "server_qps": qps, "latency_ms_p50": p99 / 2,
                  "latency_ms_p99": p99}, {"clients": clients})
    return root


def test_a_concurrency_sweep_is_recommended_by_served_qps_and_p99(concurrency_sweep):
    write_reports(concurrency_sweep)
    text = json.loads((concurrency_sweep / "summary.json").read_text())["recommendation"]
    assert text.startswith("Deploy `runtime=torch model=resnet18 resolution=224 batch=4 "
                           "precision=fp32 pipeline=current scenario.clients=4`")
    assert "800.0 qps served at p99 6 ms" in text
    assert "the lowest p99 among the configurations within 5% of the highest served qps " \
           "(server_qps)" in text
    assert "820.0 qps by `scenario.clients=16`" in text and "FPS" not in text
    best = (concurrency_sweep / "report.md").read_text().split("## Best configuration")[1]
    best = best.split("\n## ", 1)[0]
    assert "highest served qps | scenario.clients=16" in best and "FPS" not in best


def test_a_latency_bound_picks_the_highest_served_qps_within_it(concurrency_sweep):
    text = an.recommendation(load_dir(concurrency_sweep), max_latency_ms=5)
    assert text.startswith("Deploy `runtime=torch") and "scenario.clients=1`" in text
    assert "the highest served qps (server_qps) with p99 <= 5 ms" in text
    nothing = an.recommendation(load_dir(concurrency_sweep), max_latency_ms=1)
    assert nothing.startswith("No serving configuration meets p99 <= 1 ms")
    alone = load_dir(concurrency_sweep)
    alone.rows = alone.rows[2:]  # 16 clients, p99 25 ms: no other near it
    text = an.recommendation(alone)
    assert "820.0 qps served at p99 25 ms, the highest served qps (server_qps), no other " \
           "within 5% of it; no latency bound given" in text


# --- figures that cannot be right ------------------------------------------------------------


def test_disturbed_names_each_impossible_figure_and_the_rounds_to_type():
    ok = {"status": "ok", "e2e_fps": 400.0, "decode_ceiling_fps": 1000.0,
          "infer_ceiling_fps": 450.0, "server_qps": 90.0, "capacity_qps": 100.0, "fps": 95.0,
          "fps_rounds_ci95_low": 80.0}
    assert an.disturbed(ok) is None
    e2e = an.disturbed(ok | {"e2e_fps": 4977.0})
    assert "end to end ran at 1106% of the slower of its ceilings" in e2e
    assert e2e.endswith("re-measure it in rounds on a quiet machine (bench.rounds=3)")
    served = an.disturbed(ok | {"server_qps": 300.0})
    assert "served 300.0 qps, above its offline capacity of 100.0/s" in served
    negative = an.disturbed(ok | {"fps_rounds_ci95_low": -12.0, "rounds": 3.0})
    assert "fps_rounds_ci95_low = -12 is negative" in negative
    assert "in more rounds on a quiet machine (bench.rounds=5)" in negative
    scattered = ok | {"infer_ms_per_img_ci95_low": -0.3}  # three calls, one of them stalled
    assert an.disturbed(scattered) is None and "below zero" in an.unsteady(scattered)


@pytest.fixture
def disturbed_sweep(tmp_path) -> Path:
    """channels_last on and off; the 'on' job's end-to-end figure is 1106% of its own ceiling
    (its inference-alone figure taken in a slower minute) and its FPS the highest."""
    root = tmp_path / "shaken"
    ceilings = {"decode_ceiling_fps": 1000.0, "infer_ceiling_fps": 450.0}
    save_job(root, 0, {"batch": 8, "flags.channels_last": False},
             {"fps": 500.0, "infer_ms_per_img": 2.0, "infer_ms_p50": 16.0, "e2e_fps": 400.0,
              "e2e_ms_per_img": 2.5, **ceilings, "e2e_vs_ceiling_pct": 88.9})
    save_job(root, 1, {"batch": 8, "flags.channels_last": True},
             {"fps": 900.0, "infer_ms_per_img": 1.1, "infer_ms_p50": 8.8, "e2e_fps": 4977.0,
              "e2e_ms_per_img": 0.2, **ceilings, "e2e_vs_ceiling_pct": 1106.0})
    return root


def test_a_disturbed_job_is_marked_advised_and_left_out_of_verdicts(disturbed_sweep):
    sweep = load_dir(disturbed_sweep)
    assert an.ab_pairs(sweep, "flags.channels_last") == []
    write_reports(disturbed_sweep)
    md = (disturbed_sweep / "report.md").read_text()
    shaken = _section(md, "Disturbed jobs (excluded from the recommendation, best and A/B)")
    assert "| 1_8-True |" in shaken and "1106% of the slower of its ceilings" in shaken
    assert "re-measure it in rounds on a quiet machine (bench.rounds=3)" in shaken
    assert "DISTURBED: end to end ran at 1106%" in _section(md, "runtime=torch")
    assert "flags.channels_last=true" not in _section(md, "Recommendation")
    assert "No two finished jobs differ in flags.channels_last alone" in md
    assert "Left out of every pair as disturbed (see Disturbed jobs): 1_8-True." in md
    summary = json.loads((disturbed_sweep / "summary.json").read_text())
    assert set(summary["disturbed"]) == {"1_8-True"}
    assert set(summary["best"].values()) == {"0_8-False"}


def test_columns_a_cpu_has_none_of_are_left_out(disturbed_sweep):
    write_reports(disturbed_sweep)
    table = _section((disturbed_sweep / "report.md").read_text(), "runtime=torch")
    header = table.strip().splitlines()[0]
    assert "| FPS |" in header
    for empty in ("TFLOPS peak", "util %", "GPU busy %"):
        assert empty not in header


# --- a rate's confidence bound --------------------------------------------------------------


def test_a_rate_bound_on_the_log_scale_is_never_negative():
    fps = [40.0, 900.0, 35.0, 1100.0]  # rounds on a loaded machine: a spread of 30x
    # the plain t interval of these says a rate may be negative; the job's own bound does not
    from sweep.result import JobResult

    records = [{"round": i + 1, "status": "ok", "error": None, "metrics": {"fps": v}}
               for i, v in enumerate(fps)]
    job = rounds.combine(JobResult(job="j", status="ok"), records, 4)
    assert 0 < job.metrics["fps_rounds_ci95_low"] < job.metrics["fps_rounds_ci95_high"]
    low, high = ci95_log(fps)
    geo = float(pytest.importorskip("numpy").exp(sum(map(__import__("math").log, fps)) / 4))
    assert 0 < low < geo < high
    steady = ci95_log([100.0, 101.0, 99.0])
    assert steady[0] == pytest.approx(97.5, abs=0.5) and steady[1] == pytest.approx(102.5, abs=0.5)
    assert ci95_log([100.0]) is None and ci95_log([100.0, 0.0]) is None
