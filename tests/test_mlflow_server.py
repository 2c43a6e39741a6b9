"""Logging into a real `mlflow server` on 127.0.0.1, started by the test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import QUICK, only_sweep_dir, run_cli
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    mlflow_bin = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    proc = subprocess.Popen(
        [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail((tmp_path / "server.log").read_text()[-3000:])
            time.sleep(0.5)
    else:
        pytest.fail("mlflow server did not come up in 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_sweep_logs_into_a_server(mlflow_server, tmp_path, cache_dir):
    proc = run_cli(["-m", "batch=1,2", "tracking.experiment=server", *QUICK], tmp_path, cache_dir,
                   env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()  # MLFLOW_TRACKING_URI won over tracking.uri
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("server")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("sweep.role") == "job"]
    assert len(runs) == 3 and len(children) == 2
    assert all(r.info.status == "FINISHED" and r.data.metrics["fps"] > 0 for r in children)
    art = client.list_artifacts(children[0].info.run_id)
    assert "result.json" in {a.path for a in art}
    assert only_sweep_dir(tmp_path).exists()
