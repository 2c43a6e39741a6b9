"""Names other tools read are kept: a sweep writes every result.json key, job file, summary
column and MLflow param, metric, tag and artifact that the sweep recorded in
tests/data/sweep_keys.json wrote (commit b9aab8d), plus the names listed in ADDED. Later
features may add names (checked against the metric vocabulary), never drop or rename one. Jobs
are matched by Hydra's job number: their folders now carry every swept choice
(`-current`/`-fast`), as their run names do."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import HUGE, run_cli
from keyset import sweep_keys

from sweep.demo_data import generate
from sweep.metrics import unknown, unknown_info
from sweep.result import SweepRecord
from sweep.tracking.mlflow_store import option_keys

pytestmark = pytest.mark.slow

BEFORE = json.loads((Path(__file__).parent / "data" / "sweep_keys.json").read_text())
# what the redesign adds, on purpose: the `scenario` config group (one more param); where the
# model comes from (model.kind, model.path); what a re-run does with finished and failed jobs
# (`resume`, `reuse_dir`)
ADDED = {"params": {"scenario", "model.kind", "model.path", "resume", "reuse_dir"},
         "summary_csv": {"scenario", "model.kind", "model.path", "resume", "reuse_dir"}}
# each end-to-end job also writes its ceilings and the stage that bounds it
E2E_METRICS = {"decode_ceiling_fps", "infer_ceiling_fps", "pipeline_ceiling_fps",
               "e2e_vs_ceiling_pct"}
E2E_ADDED = {"metrics": E2E_METRICS, "info": {"bound_by", "bound_basis"},
             "tags": {"info.bound_by", "info.bound_basis"}}
ADDED["summary_csv"] |= E2E_METRICS | {"bound_by", "bound_basis"}
# the end-to-end run's telemetry says what read it or why nothing did (its energy metrics,
# e2e_j_per_img on NVML or e2e_cpu_j_per_img on RAPL, only where a reader exists)
E2E_ADDED["info"] |= {"e2e_telemetry"}
E2E_ADDED["tags"] |= {"info.e2e_telemetry"}
ADDED["summary_csv"] |= {"e2e_telemetry"}
# every child run logs every choice's options (`n/a` where its choice lacks one)
ADDED_RUN_PARAMS = option_keys()


def _by_number(named: dict) -> dict:
    return {k.split("_", 1)[0] if k[0].isdigit() else k: v for k, v in named.items()}


@pytest.fixture(scope="module")
def after(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("keys")
    generate(cwd / "demo", classes=2, per_class=4)
    proc = run_cli(["-m", "runtime=torch,onnx", "data=imagefolder", "data.root=demo",
                    "pipeline=current,fast", f"batch=2,{HUGE}", "hydra.sweep.dir=ms",
                    "tracking.experiment=keys", "resolution=32", "bench.warmup=1",
                    "bench.min_iters=3", "bench.min_seconds=0.05", "check.samples=4"],
                   cwd, tmp_path_factory.mktemp("cache"))
    # the jobs of a batch too large for any host's memory fail, as batch=0's did before
    assert proc.returncode == 1, proc.stderr[-3000:]
    return sweep_keys(cwd / "ms", f"sqlite:///{cwd / 'mlflow.db'}", "keys")


def _expected(kind: str, names: list[str]) -> list[str]:
    return sorted(set(names) | ADDED.get(kind, set()))


def _with_e2e(before: dict[str, list[str]], kind: str, names: list[str]) -> list[str]:
    """`names` plus the ceilings and bound an end-to-end job adds, for a job that measured end
    to end."""
    if "e2e_fps" not in before.get("metrics", []):
        return names
    return sorted(set(names) | E2E_ADDED.get(kind, set()))


def test_job_folders_hold_the_same_names(after):
    jobs = _by_number(after["jobs"])
    assert sorted(jobs) == sorted(_by_number(BEFORE["jobs"]))
    for job, before in _by_number(BEFORE["jobs"]).items():
        for kind, names in before.items():
            expected = _expected(kind, names) if "params" == kind else names
            missing = set(_with_e2e(before, kind, expected)) - set(jobs[job][kind])
            assert not missing, (job, kind, sorted(missing))


def test_job_folders_tell_the_pipelines_apart(after):
    names = [job.split("_", 1)[1] for job in sorted(after["jobs"])]
    assert len(set(names)) == len(names), names  # pipeline=current,fast: eight distinct names
    assert {n.rsplit("-", 1)[-1] for n in names} == {"current", "fast"}


def test_summary_and_sweep_files_hold_the_same_names(after):
    assert set(_expected("summary_csv", BEFORE["summary_csv"])) <= set(after["summary_csv"])
    assert set(BEFORE["summary_json"]) <= set(after["summary_json"])
    assert set(BEFORE["sweep_files"]) <= set(after["sweep_files"])


def test_the_sweep_record_keeps_its_field_names(after):
    """sweep_keys.json's `sweep_record` lists every key a sweep.json holds (its fields, which
    reports, uploads and resumed sweeps read): none renamed or dropped, none written unlisted."""
    fields = {f.name for f in dataclasses.fields(SweepRecord)} - {"unknown"}
    assert set(BEFORE["sweep_record"]) <= fields, sorted(set(BEFORE["sweep_record"]) - fields)
    assert set(after["sweep_record"]) <= set(BEFORE["sweep_record"]), after["sweep_record"]
    # this sweep reached its store: the multirun's start and the parent run are recorded
    assert {"started", "overrides", "total_jobs", "parent_run_id", "tracking_uri"} <= set(
        after["sweep_record"])


def test_mlflow_runs_hold_the_same_names(after):
    runs = _by_number(after["mlflow"])
    assert sorted(runs) == sorted(_by_number(BEFORE["mlflow"]))
    for run, before in _by_number(BEFORE["mlflow"]).items():
        for kind, names in before.items():
            if kind == "params" and run != "parent":
                names = sorted(set(_expected(kind, names)) | ADDED_RUN_PARAMS)
            missing = set(_with_e2e(before, kind, names)) - set(runs[run][kind])
            assert not missing, (run, kind, sorted(missing))


def test_every_child_run_has_the_same_params(after):
    children = [run["params"] for name, run in after["mlflow"].items() if name != "parent"]
    assert len(children) == 8 and all(p == children[0] for p in children)


def test_every_metric_written_is_in_the_vocabulary(after):
    written = {m for job in after["jobs"].values() for m in job["metrics"]}
    written |= {m for run in after["mlflow"].values() for m in run["metrics"]}
    assert written and not unknown(written)


def test_every_info_key_a_job_writes_is_in_the_info_vocabulary(after):
    """Each `info` key of every job's result.json has a one-line meaning in metrics.INFO_KEYS."""
    for job, kinds in after["jobs"].items():
        assert not unknown_info(kinds["info"]), (job, unknown_info(kinds["info"]))

