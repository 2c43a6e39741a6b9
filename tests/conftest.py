"""Shared helpers: run the real CLI in a subprocess, in a scratch folder, with a scratch cache."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

# Two pytest workers share CI's two cores, and most tests start `python -m sweep` processes:
# torch's intra-op threads (one per core in each) then spin against each other and cost ~15%
# more CPU than one thread each. What the tests check does not depend on the thread count.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests of a module that share a module-scoped fixture (a finished sweep, a compile)
    form one pytest-xdist group, so that one worker builds it once rather than each worker
    building its own; then the multiruns (`slow`, or a group holding one) first, in their
    order: xdist hands tests out in this order, so that no worker starts a minutes-long test
    while the other runs dry."""
    slow_groups = set()
    for item in items:
        group = _shared_fixture_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
            if item.get_closest_marker("slow"):
                slow_groups.add(group)
    items.sort(key=lambda item: not (item.get_closest_marker("slow")
                                     or _shared_fixture_group(item) in slow_groups))


def _shared_fixture_group(item: pytest.Item) -> str | None:
    info = getattr(item, "_fixtureinfo", None)
    if info is None or not any(defs and defs[-1].scope == "module"
                               for defs in info.name2fixturedefs.values()):
        return None
    return item.module.__name__

# The pipeline tests' image set: its resolution and batch.
SET_RES, SET_BATCH = 32, 4
# Small and quick: what every subprocess job in the tests adds to its overrides.
QUICK = ["resolution=32", "bench.warmup=1", "bench.min_iters=3", "bench.min_seconds=0.05",
         "check.samples=4"]


# a batch whose inputs alone (11 TiB at resolution 32) exceed the memory of any host: a valid
# config whose job fails at job level, before it allocates anything
HUGE = 1_000_000_000


@pytest.fixture
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def run_cli(args: list[str], cwd: Path, cache: Path, env: dict[str, str] | None = None,
            module: str = "sweep", timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(SWEEP_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def only_sweep_dir(root: Path) -> Path:
    """The one multirun/<date>/<time> folder under `root`."""
    dirs = [p for p in (root / "multirun").glob("*/*") if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(backend_uri: str, workdir: Path, workers: int = 1) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 for the duration of the block; yields its URL."""
    port = free_port()
    mlflow_bin = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    log = workdir / "mlflow-server.log"
    proc = subprocess.Popen(
        [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend_uri, "--artifacts-destination", str(workdir / "artifacts"),
         "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=open(log, "w"),
        # no job runner (MLflow 3's background jobs, which these tests never use): it starts
        # processes of its own that take the CPUs for half a minute
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True)  # its workers in its process group: all of them end with it
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: urllib.request.urlopen(f"{url}/health", timeout=2), proc, log, 180)
        yield url
    finally:
        _end_group(proc)


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL when it has not ended in 30 s (a loaded
    machine: a server that is slow to stop is no failure of the test that used it)."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait(ready, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            ready()
            return
        except (OSError, subprocess.CalledProcessError):
            if proc.poll() is not None:
                pytest.fail(f"server exited: {log.read_text()[-3000:]}")
            time.sleep(0.5)
    pytest.fail(f"server did not come up in {seconds} s: {log.read_text()[-3000:]}")


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """A private PostgreSQL server on 127.0.0.1 (Debian's package; .ci/run installs it). Skipped
    where it is missing, unless SWEEP_REQUIRE_POSTGRES=1 (CI), where that is a failure."""
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if not (initdb and postgres):
        if os.environ.get("SWEEP_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is required (SWEEP_REQUIRE_POSTGRES=1) but initdb/postgres "
                        "are not installed: apt-get install -y postgresql")
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    data = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data, "postgres")
    subprocess.run([*as_user, initdb, "-D", str(data / "db"), "-U", "sweep", "--auth=trust"],
                   check=True, capture_output=True)
    port = free_port()
    log = data / "postgres.log"
    proc = subprocess.Popen([*as_user, postgres, "-D", str(data / "db"), "-p", str(port), "-k",
                             str(data), "-c", "listen_addresses=127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    isready = _pg_bin("pg_isready")
    _wait(lambda: subprocess.run([isready, "-h", "127.0.0.1", "-p", str(port)], check=True,
                                 capture_output=True), proc, log, 60)
    subprocess.run([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "sweep",
                    "mlflow"], check=True, capture_output=True)
    try:
        yield f"postgresql://sweep@127.0.0.1:{port}/mlflow"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """An evaluation set (4 classes x 6, JPEG and PNG) and resnet18 weights whose classifier was
    fitted on a separate training set of the same classes at SET_RES: accuracy and agreement
    mean something."""
    from sweep.demo_data import fit_head, generate

    base = tmp_path_factory.mktemp("sets")
    generate(base / "train", classes=4, per_class=12, seed=1)
    generate(base / "eval", classes=4, per_class=6, seed=0)
    weights = base / "head.pth"
    assert fit_head(base / "train", weights, resolution=SET_RES) == 100.0
    return base / "eval", weights


@contextlib.contextmanager
def fitted_runtime(weights: Path, device) -> Iterator:
    """Eager PyTorch on `device`, prepared with the fitted model of `trained`."""
    import torch

    from sweep.config import ModelConfig, TorchRuntimeConfig
    from sweep.models import build_model
    from sweep.runtimes import JobContext, create_runtime

    ctx = JobContext(device=device, precision="fp32", batch=SET_BATCH, resolution=SET_RES,
                     channels_last=False, cache=None)
    rt = create_runtime(TorchRuntimeConfig(), ctx)
    rt.prepare(build_model(ModelConfig(weights=str(weights), num_classes=4)),
               torch.zeros(SET_BATCH, 3, SET_RES, SET_RES))
    try:
        yield rt
    finally:
        rt.close()


def image_files(root: Path) -> list[Path]:
    """The images of a set, in a stable order."""
    return sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".png"))
