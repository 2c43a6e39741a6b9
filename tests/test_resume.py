"""A sweep's record stays whole when it is resumed, started twice, or cut off: one sweep per
folder, rounds re-measured only where lost (a damaged rounds file named, a SIGTERM in round 2),
the folder and MLflow telling the same story, a full disk or artifact store closing every run,
and a dead tracking server costing seconds at every entry point."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import QUICK, free_port, run_cli
from mlflow.tracking import MlflowClient

from sweep import rounds
from sweep.result import ROUNDS_FILE, JobResult, read_rounds


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(SWEEP_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
    return env


def _runs(root: Path, experiment: str, role: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id]) if exp else []
    return [r for r in found if r.data.tags.get("sweep.role") == role]


def test_a_damaged_rounds_file_is_named_and_its_rounds_measured_again(tmp_path, caplog):
    good = {"round": 1, "digest": "d", "status": "ok", "error": None, "metrics": {"fps": 9.0},
            "started": 1.0, "duration_s": 1.0}
    bad = [dict(good, round="2"), dict(good, round=3, metrics=[1, 2]), "x"]
    (tmp_path / ROUNDS_FILE).write_text(json.dumps([good, *bad]))
    latest = JobResult(job="j", status="ok", metrics={"fps": 10.0})
    with caplog.at_level(logging.WARNING):
        records = rounds.record(tmp_path, 2, "d", latest)  # wrong types aborted the sweep
    assert [r["round"] for r in records] == [1, 2]
    said = caplog.text
    assert str(tmp_path / ROUNDS_FILE) in said and "round='2'" in said
    assert "metrics of type list" in said and "is a str" in said
    combined = rounds.combine(latest, records, 3)
    assert combined.info["rounds_done"] == [1, 2]
    assert not rounds.covers(combined, {"info": {"rounds_done": [1, 2, 3]}})
    caplog.clear()
    (tmp_path / ROUNDS_FILE).write_text("[{not json")
    with caplog.at_level(logging.WARNING):
        assert read_rounds(tmp_path) == []
    assert str(tmp_path / ROUNDS_FILE) in caplog.text and "not readable" in caplog.text


@pytest.mark.slow
def test_the_same_sweep_started_twice_into_one_folder_runs_once(tmp_path, cache_dir):
    args = [sys.executable, "-m", "sweep", "-m", "batch=1,2", "hydra.sweep.dir=s",
            "tracking.experiment=twice", *QUICK]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=_env(cache_dir), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [o[1][-2000:] for o in outs]
    winner, loser = sorted(range(2), key=lambda i: procs[i].returncode)
    said = outs[loser][1]
    assert "hydra.sweep.dir=s is in use by another sweep" in said
    assert f"pid {procs[winner].pid} holds" in said and "Traceback" not in said
    parents = _runs(tmp_path, "twice", "parent")
    assert [p.info.status for p in parents] == ["FINISHED"]  # no orphan RUNNING parent
    assert len(_runs(tmp_path, "twice", "job")) == 2
    assert outs[winner][0].count("] torch-resnet18") == 2  # each job measured once


def _wait_for(check, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended first: {proc.communicate()[0][-3000:]}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail("timed out waiting for round 2")


@pytest.mark.slow
def test_rounds_resume_after_damage_and_sigterm_and_agree_with_mlflow(tmp_path, cache_dir):
    """A damaged rounds file is named and the job measured again, and the finished result stays
    until its rounds are; SIGTERM during round 2 (isolation=process) keeps the finished round
    1; force=true re-measures; after each, MLflow's one live run holds result.json's figures."""
    # in the sweep's process, but for the run stopped in round 2: a round per worker process
    args = ["-m", "bench.rounds=2", "hydra.sweep.dir=s", "tracking.experiment=rr",
            *QUICK, "bench.min_seconds=2"]
    first = run_cli(args, tmp_path, cache_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    job = next((tmp_path / "s").glob("0_*"))
    finished = json.loads((job / "result.json").read_text())
    # damaged: round as a string (the sweep aborted) and metrics not an object
    records = read_rounds(job)
    (job / ROUNDS_FILE).write_text(json.dumps([dict(records[0], round="1"),
                                               dict(records[1], metrics="fast")]))
    sweep = subprocess.Popen([sys.executable, "-m", "sweep", *args, "isolation=process"],
                             cwd=tmp_path,
                             env=_env(cache_dir), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    pid_of_round_1 = []

    def round_2_started() -> bool:
        done = [r["round"] for r in read_rounds(job)]
        pid = (job / "worker.pid").read_text() if (job / "worker.pid").exists() else ""
        if done == [1] and not pid_of_round_1:
            pid_of_round_1.append(pid)
        return done == [1] and pid not in ("", *pid_of_round_1)

    _wait_for(round_2_started, 300, sweep)
    time.sleep(0.5)
    sweep.send_signal(signal.SIGTERM)
    out, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert f"{job / ROUNDS_FILE}: record 1 of 2 has round='1'" in out
    kept = json.loads((job / "result.json").read_text())  # not deleted, not round 1's figures
    assert (kept["uid"], kept["metrics"]) == (finished["uid"], finished["metrics"])
    round_1 = read_rounds(job)[0]

    again = run_cli(args, tmp_path, cache_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped, finished before") == 1  # round 1 is not measured again
    assert read_rounds(job)[0] == round_1 and [r["round"] for r in read_rounds(job)] == [1, 2]
    _assert_mlflow_agrees(tmp_path, job, finished)

    resumed = json.loads((job / "result.json").read_text())
    forced = run_cli([*args, "force=true"], tmp_path, cache_dir)
    assert forced.returncode == 0, forced.stderr[-3000:]
    _assert_mlflow_agrees(tmp_path, job, resumed)


def _assert_mlflow_agrees(root: Path, job: Path, before: dict) -> None:
    """The job was measured again since `before`: MLflow holds the new figures only."""
    result = json.loads((job / "result.json").read_text())
    assert result["metrics"]["rounds"] == 2 and result["metrics"] != before["metrics"]
    [run] = _runs(root, "rr", "job")  # one live run, the one result.json names
    assert run.info.run_id == result["info"]["mlflow_run_id"]
    assert run.data.tags["sweep.job_uid"] == result["uid"]
    assert run.data.metrics["fps"] == pytest.approx(result["metrics"]["fps"])
    assert run.data.metrics["rounds"] == 2


FULL = ["-m", "batch=1,2", "hydra.sweep.dir=s", "tracking.experiment=full", *QUICK]


@pytest.mark.slow
def test_hydras_own_write_on_a_full_disk_fails_one_job_and_closes_the_parent(
        tmp_path, cache_dir):
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is needed to simulate a full disk")
    hydra_dir = tmp_path / "s" / "0_torch-resnet18-32-b1-fp32" / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "config.yaml").symlink_to("/dev/full")  # Hydra's first write of the job
    proc = run_cli(FULL, tmp_path, cache_dir)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "job 0 (" in proc.stdout and "not run: Hydra could not write its files" in proc.stdout
    assert "sweep done: 2 jobs, 1 failed" in proc.stdout  # the other job still ran
    assert [p.info.status for p in _runs(tmp_path, "full", "parent")] == ["FAILED"]
    assert [c.info.status for c in _runs(tmp_path, "full", "job")] == ["FINISHED"]


@pytest.mark.slow
def test_a_full_artifact_store_leaves_no_run_running_and_the_upload_relogs_it(
        tmp_path, cache_dir):
    blocker = tmp_path / "store"
    blocker.write_text("a file where the artifact folder should be")  # every artifact write fails
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("full", artifact_location=(blocker / "artifacts").as_uri())
    proc = run_cli(FULL[:1] + ["batch=1"] + FULL[2:], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [cut] = _runs(tmp_path, "full", "job")
    assert cut.info.status == "FAILED" and "sweep.logged" not in cut.data.tags
    blocker.unlink()
    up = run_cli([str(tmp_path / "s"), "--log-to-mlflow"], tmp_path, cache_dir,
                 module="sweep.report")
    assert up.returncode == 0, up.stderr[-3000:]
    assert "1 jobs uploaded" in up.stdout
    [run] = _runs(tmp_path, "full", "job")
    assert run.info.status == "FINISHED" and run.info.run_id != cut.info.run_id
    assert "samples.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.slow
def test_a_lone_job_with_a_dead_server_and_rounds_says_both_in_seconds(tmp_path, cache_dir):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.time()
    proc = run_cli([f"tracking.uri={dead}", "bench.rounds=3", *QUICK], tmp_path, cache_dir,
                   timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.time() - t0 < 120  # MLflow's own retries took about 4.5 minutes
    out = proc.stdout + proc.stderr
    assert "bench.rounds=3 is ignored" in out and "-m" in out
    assert "--log-to-mlflow" in out
    [saved] = (tmp_path / "outputs").glob("*/*/result.json")
    result = json.loads(saved.read_text())
    assert result["status"] == "ok" and "not reachable" in result["info"]["mlflow_error"]
    t0 = time.time()
    up = run_cli([str(saved.parent.parent), "--log-to-mlflow", "--tracking-uri", dead],
                 tmp_path, cache_dir, module="sweep.report", timeout=240)
    assert up.returncode == 1 and "nothing uploaded" in up.stderr and "Traceback" not in up.stderr
    assert time.time() - t0 < 60
