"""Two writers never corrupt or duplicate the record: sweeps started together on a fresh store,
re-measured jobs in MLflow, and the same command launched twice into one folder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import QUICK
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def _start(args: list[str], cwd, cache) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(SWEEP_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "sweep", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_sweeps_started_together_on_a_fresh_sqlite_store(tmp_path, cache_dir):
    """Both initialise the same new store at once: it is made once, both sweeps log into it,
    and it reads back whole."""
    procs = [_start(["-m", f"batch={b},{b + 1}", "tracking.experiment=together",
                     f"hydra.sweep.dir=s{b}", *QUICK], tmp_path, cache_dir) for b in (1, 3)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("together").experiment_id])
    assert sorted(r.data.tags["sweep.role"] for r in runs) == ["job"] * 4 + ["parent"] * 2


def _live_jobs(root, experiment: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return [r for r in runs if r.data.tags.get("sweep.role") == "job"]


def _folder_runs(sweep_dir) -> set[str]:
    from sweep.result import job_dirs, load_result

    return {load_result(d)["info"]["mlflow_run_id"] for d in job_dirs(sweep_dir)}


def test_a_re_measured_job_replaces_its_run(tmp_path, cache_dir):
    """force=true re-measures a finished sweep and resume=retry_failed a failed job: each job
    folder keeps one live run in MLflow, the one its result names, with the new figures."""
    from conftest import HUGE, run_cli

    sweep = ["-m", f"batch=1,{HUGE}", "tracking.experiment=again", "hydra.sweep.dir=s", *QUICK]
    first = run_cli(sweep, tmp_path, cache_dir)
    assert first.returncode == 1  # the huge batch fails at job level
    before = {r.info.run_id for r in _live_jobs(tmp_path, "again")}
    assert len(before) == 2 and before == _folder_runs(tmp_path / "s")
    for extra in (["resume=retry_failed"], ["force=true"]):
        again = run_cli([*sweep, *extra], tmp_path, cache_dir)
        assert again.returncode == 1, again.stderr[-3000:]
        live = _live_jobs(tmp_path, "again")
        assert len(live) == 2 and {r.info.run_id for r in live} == _folder_runs(tmp_path / "s")
    ok = next(r for r in live if r.data.tags["sweep.status"] == "ok")
    assert ok.info.run_id not in before  # force: the finished job's run was replaced too
