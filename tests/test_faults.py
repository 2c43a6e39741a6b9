"""Fault injection: a full disk, signals to launcher and worker, a corrupt result, a
dead tracking server, a reused folder, failed jobs on resume, an emptied store, secrets."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HUGE, QUICK, free_port, run_cli
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def runs(uri: str, experiment: str) -> tuple[list, list]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id]) if exp else []
    parents = [r for r in found if r.data.tags.get("sweep.role") == "parent"]
    return parents, [r for r in found if r.data.tags.get("sweep.role") == "job"]


def results(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")}


def sqlite(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


SWEEP = ["-m", "batch=1,2", "hydra.sweep.dir=multirun/s", "tracking.experiment=faults", *QUICK]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A real two-job sweep with its MLflow store, run once; tests work on copies."""
    root = tmp_path_factory.mktemp("finished")
    proc = run_cli(SWEEP, root, tmp_path_factory.mktemp("cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def copy_of(finished: Path, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(finished, root, symlinks=True)
    return root


# --- 6: a corrupt result.json ------------------------------------------------------------


def test_corrupt_result_names_the_file_in_the_report(finished, tmp_path, cache_dir):
    root = copy_of(finished, tmp_path)
    sweep_dir = root / "multirun" / "s"
    bad = next(sweep_dir.glob("1_*/result.json"))
    bad.write_text('{"job": "torch-resnet18-32-b2-fp32", "status": "ok", "par')
    proc = run_cli([str(sweep_dir)], root, cache_dir, module="sweep.report")
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "JSONDecodeError" in proc.stderr and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "2 jobs, 1 failed" in proc.stdout  # the readable job is still reported


def test_corrupt_result_at_multirun_end_fails_the_sweep_and_closes_its_parent(
        finished, tmp_path, cache_dir):
    root = copy_of(finished, tmp_path)
    sweep_dir = root / "multirun" / "s"
    stray = sweep_dir / "7_leftover"
    stray.mkdir()
    (stray / "result.json").write_text("{not json")
    proc = run_cli(SWEEP, root, cache_dir)  # both jobs skipped: only the end of the multirun runs
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "multirun/s/7_leftover/result.json is not a readable result" in proc.stdout
    assert (sweep_dir / "report.md").is_file()
    parents, _ = runs(sqlite(root), "faults")
    assert [p.info.status for p in parents] == ["FAILED"]


# --- 1: a full disk ----------------------------------------------------------------------


def test_full_disk_in_a_multirun_reaches_mlflow_and_the_sweep_goes_on(tmp_path, cache_dir):
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is needed to simulate a full disk")
    job = tmp_path / "multirun" / "s" / "0_torch-resnet18-32-b1-fp32"
    job.mkdir(parents=True)
    for name in ("samples.json.tmp", "error.txt", "result.json.tmp", "config.yaml"):
        (job / name).symlink_to("/dev/full")  # every write the job makes: ENOSPC
    proc = run_cli(SWEEP, tmp_path, cache_dir)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "sweep done: " in proc.stdout
    parents, children = runs(sqlite(tmp_path), "faults")
    assert [p.info.status for p in parents] == ["FAILED"]
    assert len(children) == 2
    full = [c for c in children if c.data.tags["sweep.status"] == "failed"]
    assert len(full) == 1 and full[0].data.metrics["fps"] > 0  # the measurement is kept
    assert "No space left" in full[0].data.tags["sweep.error"]


# --- 3: signals --------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _start_hanging_sweep(root: Path, cache: Path) -> tuple[subprocess.Popen, int]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(SWEEP_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
    sweep = subprocess.Popen(
        [sys.executable, "-m", "sweep", "-m", "fault=hang,null", "isolation=process",
         "hydra.sweep.dir=multirun/k", "tracking.experiment=signals", *QUICK],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list((root / "multirun" / "k").glob("0_*/worker.pid"))
        if found and found[0].read_text():
            return sweep, int(found[0].read_text())
        time.sleep(0.2)
    sweep.kill()
    pytest.fail("the hanging job never started")


def _wait_gone(pid: int, seconds: float = 30) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    return False


def test_sigterm_to_launcher_ends_workers_and_marks_parent_killed(tmp_path, cache_dir):
    """SIGTERM takes Ctrl-C's path (sweep.lifecycle.multirun.Terminated is a
    KeyboardInterrupt), so this covers both."""
    sig = signal.SIGTERM
    sweep, worker = _start_hanging_sweep(tmp_path, cache_dir)
    time.sleep(1)
    sweep.send_signal(sig)
    out, _ = sweep.communicate(timeout=120)
    try:
        assert _wait_gone(worker), "the worker outlived its launcher"
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
    assert sweep.returncode == 128 + sig, out[-3000:]
    assert not list((tmp_path / "multirun" / "k").glob("*/result.json"))  # none half-taken
    parents, _ = runs(sqlite(tmp_path), "signals")
    assert [p.info.status for p in parents] == ["KILLED"]


def test_sigkill_to_launcher_ends_its_worker(tmp_path, cache_dir):
    sweep, worker = _start_hanging_sweep(tmp_path, cache_dir)
    sweep.kill()
    sweep.communicate(timeout=60)
    try:
        assert _wait_gone(worker), "the worker outlived its launcher"
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


# --- 5: a dead tracking server -----------------------------------------------------------


def test_dead_server_is_tried_once_per_sweep(tmp_path, cache_dir):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.time()
    proc = run_cli(["-m", "batch=1,2,3", "hydra.sweep.dir=multirun/d", *QUICK], tmp_path,
                   cache_dir, env={"MLFLOW_TRACKING_URI": dead})
    took = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("--log-to-mlflow") == 1, out[-3000:]  # said once, not per job
    assert took < 120  # MLflow's own retries per job take minutes
    got = results(tmp_path / "multirun" / "d")
    assert len(got) == 3 and all("mlflow_error" in r["info"] for r in got.values())


def test_a_dead_database_store_is_probed_once_not_retried():
    """A database store (postgresql://, with or without a driver suffix) is probed like an
    MLflow server: MLflow's own engine would retry it for about 100 s per sweep."""
    import socket

    from sweep.tracking import unreachable

    port = free_port()
    for uri in (f"postgresql://mlflow:pw-hunter5@127.0.0.1:{port}/mlflow",
                f"postgresql+psycopg://mlflow:pw-hunter5@127.0.0.1:{port}/mlflow"):
        t0 = time.time()
        reason = unreachable(uri, timeout_s=2.0)
        assert reason and f"127.0.0.1:{port}" in reason and "hunter5" not in reason
        assert time.time() - t0 < 3
    with socket.socket() as server:  # something listening: reachable
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert unreachable(f"postgresql://u@127.0.0.1:{server.getsockname()[1]}/db") is None
    assert unreachable("sqlite:///mlflow.db") is None  # a local store is opened, not probed


# --- 9 and 2: what a re-run does with failed jobs, and with a folder of another sweep ---------


def progress(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if re.match(r"\[\d+/\d+\] ", line)]


def test_retry_failed_reruns_only_the_failed_jobs(tmp_path, cache_dir):
    args = ["-m", f"batch=1,{HUGE}", "hydra.sweep.dir=multirun/f", "tracking.enabled=false",
            *QUICK]
    first = run_cli(args, tmp_path, cache_dir)
    assert first.returncode == 1, first.stderr[-3000:]
    again = run_cli([*args, "resume=retry_failed"], tmp_path, cache_dir)
    lines = progress(again.stdout)
    assert len(lines) == 2, again.stdout[-3000:]
    ok, failed = sorted(lines, key=lambda line: f"-b{HUGE}-" in line)
    assert "skipped, finished before" in ok and "skipped" not in failed
    assert "FAILED" in failed and again.returncode == 1


def test_folder_of_another_sweep_is_refused_unless_reuse_dir(finished, tmp_path, cache_dir):
    root = copy_of(finished, tmp_path)
    sweep_dir = root / "multirun" / "s"
    before = {p: p.read_bytes() for p in sweep_dir.glob("*/result.json")}
    other = ["-m", "batch=4", "hydra.sweep.dir=multirun/s", "tracking.experiment=faults", *QUICK]
    refused = run_cli(other, root, cache_dir)
    assert refused.returncode == 2
    assert "holds a different sweep (it ran batch=1,2, this run batch=4)" in refused.stderr
    assert "reuse_dir=true" in refused.stderr and not progress(refused.stdout)
    assert {p: p.read_bytes() for p in sweep_dir.glob("*/result.json")} == before
    # more values for a key is a resume, not refused: test_reliability's growing sweep
    reused = run_cli([*other, "reuse_dir=true"], root, cache_dir)
    assert reused.returncode == 0, reused.stderr[-3000:]
    parents, children = runs(sqlite(root), "faults")
    assert len(parents) == 2  # the reused folder's sweep has a parent run of its own
    newest = max(parents, key=lambda p: p.info.start_time)
    assert sum(c.data.tags["mlflow.parentRunId"] == newest.info.run_id for c in children) == 1


# --- 4: secrets --------------------------------------------------------------------------


def test_secrets_reach_no_file_console_line_or_store(tmp_path, cache_dir):
    token, password = "tok-hunter2-sweep", "pw-hunter3-sweep"
    store = f"postgresql://mlflow:{password}@127.0.0.1:{free_port()}/mlflow"  # nothing there
    ran = run_cli(["-m", "batch=1", f"tracking.uri={store}", "hydra.sweep.dir=multirun/a",
                   *QUICK], tmp_path, cache_dir)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert results(tmp_path / "multirun" / "a")  # the job ran; its store was unreachable
    secret_key = [f"+api_token={token}", "hydra.sweep.dir=multirun/b",
                  "tracking.experiment=secrets", *QUICK]
    refused = run_cli(["-m", "batch=1,2", *secret_key], tmp_path, cache_dir)
    assert refused.returncode == 2, refused.stderr[-3000:]  # a grid: refused before it starts
    assert "(+api_token=***): api_token is not a key of this config" in refused.stderr
    assert not (tmp_path / "multirun" / "b").exists()
    # optuna draws a trial's values as it starts: there the key fails each trial, recorded
    failed = run_cli(["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
                      "hydra.sweeper.max_failure_rate=1.0", "batch=choice(1,2)", *secret_key],
                     tmp_path, cache_dir)
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert all(r["status"] == "failed" and "api_token" in r["error"]
               for r in results(tmp_path / "multirun" / "b").values())
    _, children = runs(sqlite(tmp_path), "secrets")
    assert len(children) == 2  # logged, with their artifacts
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "multirun.yaml" for p in written)
    assert any(p.parent.name == ".hydra" for p in written)
    for proc in (ran, refused, failed):
        for secret in (token, password):
            assert secret not in proc.stdout + proc.stderr
    leaks = [str(p) for p in written for secret in (token, password)
             if secret.encode() in p.read_bytes()]
    assert not leaks
    assert "+api_token=***" in (tmp_path / "multirun" / "b" / "sweep.json").read_text()


def test_deploy_script_keeps_the_password_off_the_command_line(tmp_path):
    """deploy/mlflow-server.sh against a stand-in `mlflow` that records what it was given."""
    secret = "pw-deploy-hunter4"
    fake = tmp_path / "bin" / "mlflow"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@" > "$OUT/argv"\necho "$PGPASSWORD" > "$OUT/pgpassword"\n')
    fake.chmod(0o755)
    (tmp_path / "pw").write_text(secret)
    script = Path(__file__).parents[1] / "deploy" / "mlflow-server.sh"
    env = {"PATH": f"{fake.parent}:{os.environ['PATH']}", "HOME": str(tmp_path),
           "OUT": str(tmp_path), "MLFLOW_DB_PASSWORD_FILE": str(tmp_path / "pw")}
    subprocess.run(["bash", str(script)], env=env, check=True, timeout=60)
    argv = (tmp_path / "argv").read_text()
    assert "postgresql://mlflow@127.0.0.1:5432/mlflow" in argv and secret not in argv
    assert (tmp_path / "pgpassword").read_text().strip() == secret


# --- 7: a deleted store on resume ----------------------------------------------------------


def test_resume_into_an_emptied_store_logs_the_finished_jobs_again(finished, tmp_path, cache_dir):
    root = copy_of(finished, tmp_path)
    (root / "mlflow.db").unlink()
    again = run_cli(SWEEP, root, cache_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all("skipped" in line for line in progress(again.stdout))
    assert "does not hold this sweep's parent run" in again.stdout + again.stderr
    assert again.stdout.count("logged to MLflow again") == 2
    parents, children = runs(sqlite(root), "faults")
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(c.data.metrics["fps"] > 0 for c in children)


# --- 10: messages ----------------------------------------------------------------------------


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must not run",))


def _weights_error(tmp_path: Path, write, num_classes: int = 1000) -> str:
    from sweep.config import ModelConfig
    from sweep.errors import ConfigError
    from sweep.models import build_model, load_weights

    path = tmp_path / "w.pth"
    write(path)
    model = build_model(ModelConfig(name="resnet18", num_classes=num_classes))
    with pytest.raises(ConfigError) as e:
        load_weights(model, ModelConfig(name="resnet18", weights=str(path),
                                        num_classes=num_classes))
    return str(e.value)


def test_weights_messages_say_what_is_wrong(tmp_path):
    import pickle

    import torch

    empty = _weights_error(tmp_path, lambda p: p.write_bytes(b""))
    assert "empty (0 bytes)" in empty
    truncated = _weights_error(tmp_path, lambda p: p.write_bytes(b"PK\x03\x04junk"))
    assert not truncated.rstrip().endswith(":")  # a reason follows the colon
    unsafe = _weights_error(tmp_path, lambda p: p.write_bytes(pickle.dumps(_RunsCode(),
                                                                           protocol=4)))
    assert "could run code" in unsafe and "system" in unsafe
    from sweep.config import ModelConfig
    from sweep.models import build_model

    state = build_model(ModelConfig(name="resnet18", num_classes=10)).state_dict()
    state["fc.weight"] = torch.zeros(10, 256)  # the right classes, a wrong feature size
    mismatch = _weights_error(tmp_path, lambda p: torch.save(state, p), num_classes=10)
    assert "shape mismatch" in mismatch and "set model.num_classes" not in mismatch


def test_cache_dir_that_is_a_file_is_named(tmp_path):
    from sweep.cache import ArtifactCache
    from sweep.errors import ConfigError

    (tmp_path / "not-a-folder").write_text("")
    with pytest.raises(ConfigError, match=r"cache_dir=.*is a file, not a folder.*Give a folder"):
        ArtifactCache.open(str(tmp_path / "not-a-folder"))


# --- 8: a folder named `sweep` in the working directory ---------------------------------


@pytest.fixture(scope="module")
def editable(tmp_path_factory) -> Path:
    """This checkout installed as a user installs it (pip install -e), in a throwaway venv that
    sees the packages of the interpreter running the tests: its python."""
    venv = tmp_path_factory.mktemp("venv")
    # not --system-site-packages: inside a venv that is the base interpreter's set, not this one's
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = subprocess.run([python, "-c", where], check=True, capture_output=True,
                             text=True).stdout.strip()
    # plain path lines, so the .pth files there (this interpreter's own install of sweep) stay
    # unread; named to sort after the editable install's .pth, whose src/ must come first
    seen = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    Path(purelib, "running_env.pth").write_text("".join(f"{d}\n" for d in seen))
    # pip's own build isolation: setuptools and wheel from the index, as for the user's install,
    # not whatever setuptools this interpreter happens to have
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                           "--no-deps", "-e", str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return python


@pytest.fixture(params=["editable", "pythonpath"])
def installed(request) -> tuple[str, dict[str, str]]:
    """How `python -m sweep` finds the package: the editable install, or PYTHONPATH=src."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    if request.param == "editable":
        return str(request.getfixturevalue("editable")), env
    return sys.executable, {**env, "PYTHONPATH": str(ROOT / "src")}


def _sweep_with(installed, args: list[str], cwd: Path, cache: Path,
                module: str = "sweep") -> subprocess.CompletedProcess:
    python, env = installed
    return subprocess.run([python, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          env={**env, "SWEEP_CACHE_DIR": str(cache)}, timeout=600)


def _reported(sweep_dir: Path, proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "2 jobs: 2 ok" in (sweep_dir / "report.md").read_text()
    assert list((sweep_dir / "plots").glob("*.png"))  # sweep.plots imported, not the folder


def test_hydra_sweep_dir_named_sweep_is_reported(installed, tmp_path, cache_dir):
    args = ["-m", "batch=1,2", "hydra.sweep.dir=sweep", "tracking.enabled=false", *QUICK]
    _reported(tmp_path / "sweep", _sweep_with(installed, args, tmp_path, cache_dir))
    # a folder named `sweep` (plots/ inside) in the working directory from the start now: it
    # does not shadow the package (a resume, then the report rebuilt with its plots)
    for png in (tmp_path / "sweep" / "plots").glob("*.png"):
        png.unlink()
    _reported(tmp_path / "sweep", _sweep_with(installed, args, tmp_path, cache_dir))
    for png in (tmp_path / "sweep" / "plots").glob("*.png"):
        png.unlink()
    again = _sweep_with(installed, ["sweep", "--plots"], tmp_path, cache_dir,
                        module="sweep.report")
    _reported(tmp_path / "sweep", again)


# --- 10: every job's config checked before any job starts -------------------------------

NO_RESOLUTION = [o for o in QUICK if not o.startswith("resolution=")]


def test_a_bad_value_in_a_grid_refuses_the_sweep_before_anything_starts(tmp_path, cache_dir):
    proc = run_cli(["-m", "batch=1,0", "resolution=32,100000", "+fault_at={0:exit}",
                    "hydra.sweep.dir=multirun/v", "tracking.experiment=valid", *NO_RESOLUTION],
                   tmp_path, cache_dir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "3 bad value(s) in the config of this sweep's 4 jobs; no job was started" in proc.stderr
    assert ("job 0 (batch=1 resolution=32): fault='exit' is not valid: a fault would take the "
            "whole sweep down with isolation=inline. Add isolation=process.") in proc.stderr
    assert ("job 1 (batch=1 resolution=100000): resolution=100000 is not valid: the input side "
            "must be 8..8192 pixels. e.g. resolution=224") in proc.stderr
    assert "jobs 2, 3 (batch=0): batch=0 is not valid: must be a number >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr and not progress(proc.stdout)
    # nothing made: no folder, no store, no parent run; the fixed command is no foreign sweep
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "mlflow.db").exists()
    fixed = run_cli(["-m", "batch=1", "hydra.sweep.dir=multirun/v", "tracking.experiment=valid",
                     *QUICK], tmp_path, cache_dir)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    parents, children = runs(sqlite(tmp_path), "valid")
    assert len(parents) == 1 and len(children) == 1


def test_a_bad_value_of_one_job_is_refused_before_its_folder_is_made(tmp_path, cache_dir):
    proc = run_cli(["resolution=100000", *NO_RESOLUTION], tmp_path, cache_dir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert ("resolution=100000 is not valid: the input side must be 8..8192 pixels. "
            "e.g. resolution=224") in proc.stderr
    assert "Traceback" not in proc.stderr and "alloc" not in proc.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["batch=abc"], "batch='abc' is not valid: must be a whole number. e.g. batch=1"),
    (["-m", "flags.channels_last=maybe", "resolution=32,64"],
     "flags.channels_last='maybe' is not valid: must be true or false. "
     "e.g. flags.channels_last=false"),
    (["runtime=onnx", "runtime.opset=z"],
     "runtime.opset='z' is not valid: must be a whole number. e.g. runtime.opset=18"),
    (["runtime=tensorflow"], "runtime='tensorflow' is not valid: one of compile, onnx, openvino, "
                             "torch, trt. e.g. runtime=compile"),
    # swept: each job's composition in the callback gives the same reasons, per job
    (["-m", "batch=1,abc"], "job 1 (batch=abc): batch='abc' is not valid: must be a whole number"),
    (["-m", "runtime=torch,tensorflow"], "job 1 (runtime=tensorflow): runtime='tensorflow' is not "
                                         "valid: one of compile, onnx, openvino, torch, trt"),
])
def test_a_value_hydra_cannot_compose_is_refused_as_any_bad_value(tmp_path, cache_dir, args,
                                                                  message):
    """A value of the wrong type or an unknown choice on the command line gets the same refusal
    as any bad value, unswept (Hydra composes it before any callback) or swept: exit 2, key,
    value, what to type."""
    proc = run_cli([*args, "tracking.enabled=false"], tmp_path, cache_dir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr
    assert "HYDRA_FULL_ERROR" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_inputs_too_large_for_the_host_are_a_recorded_job_failure(tmp_path, cache_dir):
    proc = run_cli(["-m", f"batch={HUGE}", "hydra.sweep.dir=multirun/m", "tracking.enabled=false",
                    *QUICK], tmp_path, cache_dir)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the job ran and failed, as an OOM does
    (result,) = results(tmp_path / "multirun" / "m").values()
    assert result["status"] == "failed"
    assert re.search(rf"batch={HUGE} is not valid: at resolution=32 its {HUGE} input image\(s\) "
                     r"need [\d,.]+ GiB, more than the [\d,.]+ GiB free on the host\. Use a "
                     r"smaller batch or resolution", result["error"]), result["error"]
