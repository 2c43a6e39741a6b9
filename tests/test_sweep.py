"""The whole flow on CPU through the real CLI: one job, a multirun, MLflow, summary, report."""

from __future__ import annotations

import csv
import json
import re

import pytest
from conftest import HUGE, QUICK, only_sweep_dir, run_cli
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """batch=1,2,HUGE (the last one too large for the host's memory: a job-level failure) into
    a fresh sqlite MLflow store."""
    cwd = tmp_path_factory.mktemp("sweep")
    cache = tmp_path_factory.mktemp("cache")
    proc = run_cli(["-m", f"batch=1,2,{HUGE}", "tracking.experiment=ci", *QUICK], cwd, cache)
    return cwd, only_sweep_dir(cwd), proc


def test_exit_status_says_a_job_failed(sweep):
    _, _, proc = sweep
    assert proc.returncode == 1, proc.stderr[-3000:]


def test_progress_line_per_job(sweep):
    _, _, proc = sweep
    lines = [line for line in proc.stdout.splitlines() if re.match(r"\[\d+/\d+\] ", line)]
    assert len(lines) == 3, proc.stdout
    assert lines[0].startswith("[1/3] torch-resnet18-32-b1-fp32: ok") and "fps" in lines[0]
    assert "0 failed, 2 remaining, ETA " in lines[0] and "1 failed, 0 remaining" in lines[2]
    assert "FAILED" in lines[2] and f"batch={HUGE}" in lines[2]
    phases = [line for line in proc.stdout.splitlines()
              if line.startswith("torch-resnet18-32-b1-fp32: ")]
    for name in ("building", "checking", "timing (inference)"):
        assert any(line.startswith(f"torch-resnet18-32-b1-fp32: {name} done in ")
                   for line in phases), proc.stdout


def test_app_log_holds_what_the_console_showed(sweep):
    _, sweep_dir, proc = sweep
    log = (sweep_dir / "0_torch-resnet18-32-b1-fp32" / "app.log").read_text()
    shown = [line for line in proc.stdout.splitlines()
             if line.startswith(("torch-resnet18-32-b1-fp32: ", "[1/3] "))]
    assert len(shown) >= 5
    for line in shown:
        assert line in log


def test_job_folders_and_results(sweep):
    _, sweep_dir, _ = sweep
    jobs = sorted(p for p in sweep_dir.iterdir() if (p / "result.json").is_file())  # not plots/
    assert [p.name for p in jobs] == ["0_torch-resnet18-32-b1-fp32", "1_torch-resnet18-32-b2-fp32",
                                      f"2_torch-resnet18-32-b{HUGE}-fp32"]
    ok = json.loads((jobs[1] / "result.json").read_text())
    assert ok["status"] == "ok" and ok["params"]["batch"] == 2
    assert ok["params"]["runtime"] == "torch"
    m = ok["metrics"]
    assert m["fps"] > 0 and m["infer_ms_p50"] <= m["infer_ms_p99"]
    low, high = m["infer_ms_per_img_ci95_low"], m["infer_ms_per_img_ci95_high"]
    assert low <= m["infer_ms_per_img"] <= high
    assert m["gflop_per_img"] == pytest.approx(0.0757, rel=0.02)  # resnet18 at 32x32
    assert m["correct"] == 1.0 and m["host_rss_peak_mb"] > 0
    assert ok["env"]["version.torch"] and ok["env"]["cpu"]
    samples = json.loads((jobs[1] / "samples.json").read_text())["samples_ms"]
    assert len(samples) == m["infer_iters"] >= 3
    bad = json.loads((jobs[2] / "result.json").read_text())
    assert bad["status"] == "failed" and f"batch={HUGE}" in bad["error"]
    assert "free on the host" in bad["error"]


def test_summary_and_report(sweep):
    _, sweep_dir, _ = sweep
    rows = list(csv.DictReader(open(sweep_dir / "summary.csv")))
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert float(rows[0]["fps"]) > 0 and rows[2]["error"].startswith("ConfigError")
    assert len(json.loads((sweep_dir / "summary.json").read_text())["jobs"]) == 3
    report = (sweep_dir / "report.md").read_text()
    assert report.startswith(f"# Sweep: batch=1,2,{HUGE} ({sweep_dir.parent.name}/")
    assert "3 jobs: 2 ok, 1 failed" in report and "## runtime=torch" in report
    assert "## Failed jobs" in report


def test_report_rebuilds_from_job_folders_alone(sweep, tmp_path):
    cwd, sweep_dir, _ = sweep
    before = (sweep_dir / "summary.csv").read_text()
    for name in ("summary.csv", "summary.json", "report.md"):
        (sweep_dir / name).unlink()
    proc = run_cli([str(sweep_dir)], cwd, tmp_path, module="sweep.report")
    assert proc.returncode == 0, proc.stderr
    assert (sweep_dir / "summary.csv").read_text() == before
    assert (sweep_dir / "report.md").exists()


def test_mlflow_parent_with_children(sweep):
    cwd, sweep_dir, _ = sweep
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ci")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep.role") == "job"]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.data.params["batch"] == f"1,2,{HUGE}"
    assert parent.data.metrics["jobs_failed"] == 1 and parent.info.status == "FAILED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    # what the sweep varies first (the runs table cuts names short), then the rest
    assert sorted(c.info.run_name for c in children) == [
        "b1 · torch-resnet18-32-fp32", f"b{HUGE} · torch-resnet18-32-fp32",
        "b2 · torch-resnet18-32-fp32"]
    folders = {p.name.split("_", 1)[1] for p in sweep_dir.iterdir() if p.name[0].isdigit()}
    # one naming rule, failed jobs too: each run keeps its folder's name
    assert {c.data.tags["sweep.job"] for c in children} == folders
    assert parent.info.run_name == f"batch=1,2,{HUGE} ({sweep_dir.parent.name}/{sweep_dir.name})"
    assert len({frozenset(c.data.params) for c in children}) == 1  # same params, failed too
    assert children[0].data.params["runtime.opset"] == "n/a"  # an onnx option, on torch
    ok = [c for c in children if c.info.status == "FINISHED"]
    assert len(ok) == 2 and all(c.data.metrics["fps"] > 0 for c in ok)
    assert ok[0].data.params["model"] == "resnet18" and "env.version.torch" in ok[0].data.tags
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 1 and f"batch={HUGE}" in failed[0].data.tags["sweep.error"]
    artifacts = {a.path for a in client.list_artifacts(ok[0].info.run_id)}
    assert {"result.json", "samples.json", "config.yaml"} <= artifacts
    assert "report.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_single_default_job(tmp_path, cache_dir):
    """What the README's first command runs (made quick)."""
    proc = run_cli(QUICK, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch-resnet18-32-b1-fp32: ok" in proc.stdout
    results = list((tmp_path / "outputs").glob("*/*/result.json"))
    assert len(results) == 1 and (tmp_path / "mlflow.db").exists()


def test_single_failing_job_exits_nonzero_with_the_reason(tmp_path, cache_dir):
    proc = run_cli(["precision=int8", "tracking.enabled=false", *QUICK], tmp_path, cache_dir)
    assert proc.returncode == 1
    assert "runtime=torch cannot run precision=int8 on cpu" in proc.stderr
