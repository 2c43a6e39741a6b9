"""isolation=process: each job in a fresh Python process, with a timeout and a GPU of its own.

A segfault, a CUDA error, the OOM killer or a hang then ends only that job: the parent (the
launcher's process) reads the worker's result.json, or records why there is none.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sweep.config import SweepConfig
from sweep.redact import redact_file
from sweep.result import (
    WORKER_LOG,
    WORKER_PID,
    JobResult,
    failed_result,
    flatten,
    load_result,
    save_result,
)
from sweep.trust import private_dir


@contextlib.contextmanager
def gpu_lease(gpus: list[int] | None, poll_s: float = 0.5) -> Iterator[int | None]:
    """Hold one of `gpus` for the duration of a job: a file lock per GPU on this host, so
    parallel jobs (joblib, several sweeps at once) never share a device."""
    if not gpus:
        yield None
        return
    lock_dir = private_dir(Path(tempfile.gettempdir()) / f"sweep-gpu-locks-{os.getuid()}")
    while True:
        for gpu in gpus:
            # never truncates, never follows a link: a planted one fails instead of clobbering
            fd = os.open(lock_dir / f"gpu{gpu}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                         0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield gpu
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        time.sleep(poll_s)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (the OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"the job's process was killed by {name}{hint}"
    return f"the job's process exited with status {returncode} without writing a result"


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_isolated(cfg: SweepConfig, job_dir: Path) -> JobResult:
    """Run the job of `cfg` (already saved as job_dir/config.yaml) in a worker process. The
    folder's earlier result stays until the worker replaces it (a job in rounds keeps its
    finished rounds when a signal ends this one); the worker's is told apart by its uid."""
    before = load_result(job_dir)
    reason = None
    timeout_s = cfg.timeout_s
    with gpu_lease(cfg.gpus) as gpu:
        env = dict(os.environ, SWEEP_PARENT_PID=str(os.getpid()))
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        with open(job_dir / WORKER_LOG, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "sweep.worker", str(job_dir)], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            (job_dir / WORKER_PID).write_text(str(proc.pid))
            try:
                returncode = proc.wait(timeout=timeout_s or None)
            except subprocess.TimeoutExpired:
                _kill_group(proc)  # the worker and anything it started
                reason = f"timed out after {timeout_s:g} s (timeout_s) and was killed"
            except BaseException:  # Ctrl-C or SIGTERM: take the worker down with us
                _kill_group(proc)
                raise
    redact_file(job_dir / WORKER_LOG)  # its tracebacks may quote secrets
    saved = load_result(job_dir)
    if saved is not None and before is not None and saved["uid"] == before["uid"]:
        saved = None  # the worker wrote nothing: that is the earlier result
    if saved is not None and reason is None:
        result = JobResult(**saved)
    else:
        reason = reason or describe_exit(returncode)
        tail = _tail(job_dir / WORKER_LOG)
        result = failed_result(flatten(cfg), reason + (f"; last output: {tail}" if tail else ""))
    result.info["isolation"] = "process"
    if gpu is not None:
        result.info["assigned_gpu"] = gpu
    save_result(result, job_dir)
    return result
