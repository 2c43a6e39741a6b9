"""The redesign of issue 12 left what a sweep writes unchanged: the same result.json keys, job
files, summary columns and MLflow params, metrics, tags and artifacts as the sweep recorded in
tests/data/sweep_keys.json (commit b9aab8d), plus the names listed in ADDED."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from keyset import sweep_keys

from sweep.demo_data import generate
from sweep.metrics import unknown

pytestmark = pytest.mark.slow

BEFORE = json.loads((Path(__file__).parent / "data" / "sweep_keys.json").read_text())
# what the redesign adds, on purpose: the `scenario` config group (one more param); issue 17's
# resume policy (`resume`, `reuse_dir`)
ADDED = {"params": {"scenario", "resume", "reuse_dir"},
         "summary_csv": {"scenario", "resume", "reuse_dir"}}


@pytest.fixture(scope="module")
def after(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("keys")
    generate(cwd / "demo", classes=2, per_class=4)
    proc = run_cli(["-m", "runtime=torch,onnx", "data=imagefolder", "data.root=demo",
                    "pipeline=current,fast", "batch=2,0", "hydra.sweep.dir=ms",
                    "tracking.experiment=keys", "resolution=32", "bench.warmup=1",
                    "bench.min_iters=3", "bench.min_seconds=0.05", "check.samples=4"],
                   cwd, tmp_path_factory.mktemp("cache"))
    assert proc.returncode == 1, proc.stderr[-3000:]  # the batch=0 jobs fail, as before
    return sweep_keys(cwd / "ms", f"sqlite:///{cwd / 'mlflow.db'}", "keys")


def _expected(kind: str, names: list[str]) -> list[str]:
    return sorted(set(names) | ADDED.get(kind, set()))


def test_job_folders_hold_the_same_names(after):
    assert sorted(after["jobs"]) == sorted(BEFORE["jobs"])
    for job, before in BEFORE["jobs"].items():
        for kind, names in before.items():
            expected = _expected(kind, names) if "params" == kind else names
            assert after["jobs"][job][kind] == expected, (job, kind)


def test_summary_and_sweep_files_hold_the_same_names(after):
    assert after["summary_csv"] == _expected("summary_csv", BEFORE["summary_csv"])
    assert after["summary_json"] == BEFORE["summary_json"]
    assert after["sweep_files"] == BEFORE["sweep_files"]


def test_mlflow_runs_hold_the_same_names(after):
    assert sorted(after["mlflow"]) == sorted(BEFORE["mlflow"])
    for run, before in BEFORE["mlflow"].items():
        for kind, names in before.items():
            expected = _expected(kind, names) if kind == "params" and run != "parent" else names
            assert after["mlflow"][run][kind] == expected, (run, kind)


def test_every_metric_written_is_in_the_vocabulary(after):
    written = {m for job in after["jobs"].values() for m in job["metrics"]}
    written |= {m for run in after["mlflow"].values() for m in run["metrics"]}
    assert written and not unknown(written)
