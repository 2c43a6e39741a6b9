"""Isolation, resume, MLflow outages, parallel launchers, shared servers, bad inputs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import QUICK, mlflow_server, run_cli
from mlflow.tracking import MlflowClient

from sweep.result import load_result

pytestmark = pytest.mark.slow

PROCESS = ["isolation=process", "timeout_s=60"]


def results(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in sorted(sweep_dir.glob("*/result.json"))}


def runs(uri: str, experiment: str) -> tuple[list, list]:
    client = MlflowClient(tracking_uri=uri)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in found if r.data.tags.get("sweep.role") == "parent"]
    return parents, [r for r in found if r.data.tags.get("sweep.role") == "job"]


def progress(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if re.match(r"\[\d+/\d+\] ", line)]


def test_crashes_and_hangs_end_only_their_job_and_resume_does_nothing(tmp_path, cache_dir):
    """A sweep with a crashing job, an exiting one, a hanging one and a fine one ends only the
    faulty jobs; the same command again then does nothing."""
    args = ["-m", "fault=null,segfault,exit,hang", "isolation=process", "timeout_s=20",
            "hydra.sweep.dir=multirun/faults", "tracking.experiment=faults", *QUICK]
    first = run_cli(args, tmp_path, cache_dir)
    assert first.returncode == 1, first.stderr[-3000:]
    got = results(tmp_path / "multirun" / "faults")
    assert len(got) == 4
    status = {name: (r["status"], r["error"] or "") for name, r in got.items()}
    assert sum(s == "ok" for s, _ in status.values()) == 1
    errors = [e for s, e in status.values() if s == "failed"]
    assert sum("killed by SIGSEGV" in e for e in errors) == 1
    assert sum("exited with status 3" in e for e in errors) == 1
    assert sum("timed out after 20 s" in e for e in errors) == 1
    _, children = runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "faults")
    assert len(children) == 4 and sum(c.info.status == "FAILED" for c in children) == 3

    again = run_cli(args, tmp_path, cache_dir, timeout=120)
    assert again.returncode == 1  # the sweep still holds failed jobs
    lines = progress(again.stdout)
    assert len(lines) == 4 and all("skipped, finished before" in line for line in lines)
    assert lines[-1].startswith("[4/4]")
    parents, children = runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "faults")
    assert len(parents) == 1 and len(children) == 4  # nothing duplicated


def test_force_reruns_and_resume_runs_only_new_jobs(tmp_path, cache_dir):
    base = ["-m", "hydra.sweep.dir=multirun/r", "tracking.experiment=resume", *QUICK]
    assert run_cli([*base, "batch=1,2"], tmp_path, cache_dir).returncode == 0
    grown = run_cli([*base, "batch=1,2,4"], tmp_path, cache_dir)
    lines = progress(grown.stdout)
    assert [("skipped" in line) for line in lines] == [True, True, False]
    forced = run_cli([*base, "batch=1,2,4", "force=true"], tmp_path, cache_dir)
    assert not any("skipped" in line for line in progress(forced.stdout))
    _, children = runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "resume")
    assert len(children) == 3  # a forced re-measure replaces its job's run: one live run each


def test_killed_worker_is_recorded_and_interrupted_sweep_leaves_no_complete_result(
        tmp_path, cache_dir):
    env = {**os.environ, "SWEEP_CACHE_DIR": str(cache_dir)}
    env.pop("MLFLOW_TRACKING_URI", None)
    sweep = subprocess.Popen(
        [sys.executable, "-m", "sweep", "-m", "fault=hang,null", "isolation=process",
         "hydra.sweep.dir=multirun/k", "tracking.enabled=false", *QUICK],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pid_file = None
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list((tmp_path / "multirun" / "k").glob("0_*/worker.pid"))
        if found and found[0].read_text():
            pid_file = found[0]
            break
        time.sleep(0.2)
    assert pid_file is not None, "the hanging job never started"
    time.sleep(1)
    assert load_result(pid_file.parent) is None  # running: no complete result yet
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # as the OOM killer would
    out, _ = sweep.communicate(timeout=180)
    assert sweep.returncode == 1, out[-3000:]
    got = results(tmp_path / "multirun" / "k")
    hung, fine = (got[name] for name in sorted(got))
    assert hung["status"] == "failed" and "killed by SIGKILL" in hung["error"]
    assert fine["status"] == "ok"  # the sweep went on


def test_mlflow_down_keeps_results_and_uploads_later_once(tmp_path, cache_dir):
    down = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
    proc = run_cli(["-m", "batch=1,2", "hydra.sweep.dir=multirun/d", "tracking.experiment=late",
                    *QUICK], tmp_path, cache_dir, env=down)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_dir = tmp_path / "multirun" / "d"
    got = results(sweep_dir)
    assert all(r["status"] == "ok" and "mlflow_error" in r["info"] for r in got.values())
    uri = f"sqlite:///{tmp_path / 'late.db'}"
    for _ in range(2):  # the second upload finds everything there
        up = run_cli([str(sweep_dir), "--log-to-mlflow", "--tracking-uri", uri], tmp_path,
                     cache_dir, module="sweep.report")
        assert up.returncode == 0, up.stderr[-3000:]
    assert "0 jobs uploaded, 2 were there already" in up.stdout
    parents, children = runs(uri, "late")
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all("mlflow_run_id" in r["info"] for r in results(sweep_dir).values())


def test_one_job_per_gpu_in_parallel_dry_run(tmp_path, cache_dir):
    """hydra/launcher=local_gpus on two (pretend) GPUs: each job's process sees one device, and
    jobs running at the same time never share one. The jobs compute on the CPU here."""
    proc = run_cli(["-m", "hydra/launcher=local_gpus", "isolation=process", "gpus=[0,1]",
                    "device=cpu", "batch=1,2,3", "hydra.sweep.dir=multirun/g",
                    "tracking.experiment=gpus", *QUICK], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "n_jobs=2" in proc.stdout + proc.stderr
    got = list(results(tmp_path / "multirun" / "g").values())
    assert len(got) == 3
    spans = [(r["started"], r["started"] + r["duration_s"], r["info"]["assigned_gpu"]) for r in got]
    for r in got:
        assert r["env"]["cuda_visible_devices"] == str(r["info"]["assigned_gpu"])
    for i, (s1, e1, g1) in enumerate(spans):
        for s2, e2, g2 in spans[i + 1:]:
            if s1 < e2 and s2 < e1:  # overlapping in time
                assert g1 != g2
    _, children = runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "gpus")
    assert len(children) == 3  # two processes logging into one sqlite store lost nothing
    assert {c.data.tags["env.cuda_visible_devices"] for c in children} == {"0", "1"}


def test_submitit_local_launcher(tmp_path, cache_dir):
    proc = run_cli(["-m", "hydra/launcher=submitit_local", "batch=1,2",
                    "hydra.sweep.dir=multirun/s", "tracking.experiment=submitit", *QUICK],
                   tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["status"] for r in results(tmp_path / "multirun" / "s").values()] == ["ok", "ok"]
    _, children = runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "submitit")
    assert len(children) == 2


def test_parallel_sweep_into_postgres_backed_server(postgres_uri, tmp_path, cache_dir):
    with mlflow_server(postgres_uri, tmp_path, workers=2) as url:
        proc = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                        "isolation=process", "batch=1,2", "tracking.experiment=shared",
                        "hydra.sweep.dir=multirun/pg", *QUICK], tmp_path, cache_dir,
                       env={"MLFLOW_TRACKING_URI": url})
        assert proc.returncode == 0, proc.stderr[-3000:]
        parents, children = runs(url, "shared")
        assert len(parents) == 1 and len(children) == 2
        assert all(c.info.status == "FINISHED" and c.data.metrics["fps"] > 0 for c in children)


def test_secrets_are_never_logged(tmp_path, cache_dir):
    secret = "hunter2-do-not-log"
    proc = run_cli(["tracking.experiment=secrets", "tracking.uri=sqlite:///mlflow.db",
                    "hydra.run.dir=out", *QUICK], tmp_path, cache_dir,
                   env={"MY_API_TOKEN": secret, "AWS_SECRET_ACCESS_KEY": secret,
                        "DB_PASSWORD": secret})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert secret not in (tmp_path / "out" / "result.json").read_text()
    _, children = runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "secrets")
    logged = json.dumps([children[0].data.params, children[0].data.tags])
    assert secret not in logged


def test_uri_password_is_redacted_in_params():
    from sweep.result import flatten

    params = flatten({"tracking": {"uri": "postgresql://mlflow:s3cret@127.0.0.1:5432/db"}})
    assert params["tracking.uri"] == "postgresql://mlflow:***@127.0.0.1:5432/db"


def test_full_disk_fails_the_job_loudly_and_mlflow_keeps_the_result(tmp_path, cache_dir):
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is needed to simulate a full disk")
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json.tmp").symlink_to("/dev/full")  # every write of result.json: ENOSPC
    proc = run_cli(["hydra.run.dir=out", "tracking.experiment=full", *QUICK], tmp_path, cache_dir)
    assert proc.returncode == 1
    assert "result.json not written" in proc.stderr and "No space left" in proc.stderr
    _, children = runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "full")
    assert len(children) == 1 and children[0].data.metrics["fps"] > 0
    assert "No space left" in children[0].data.tags["sweep.error"]


def test_fault_needs_process_isolation(tmp_path, cache_dir):
    proc = run_cli(["fault=segfault", "tracking.enabled=false", *QUICK], tmp_path, cache_dir)
    assert proc.returncode == 2  # refused before the job starts
    assert "fault='segfault' is not valid" in proc.stderr and "isolation=process" in proc.stderr


def test_override_keys_become_valid_mlflow_param_names():
    from sweep.tracking.mlflow_store import param_key

    assert param_key("+fault_at") == "fault_at" and param_key("++bench.warmup") == "bench.warmup"
    assert param_key("hydra/launcher") == "hydra/launcher" and param_key("a[0]") == "a_0_"
