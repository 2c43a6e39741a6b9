"""Logging into a real `mlflow server` on 127.0.0.1, started by the test."""

from __future__ import annotations

import pytest
from conftest import QUICK, mlflow_server, only_sweep_dir, run_cli
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def test_sweep_logs_into_a_server(tmp_path, cache_dir):
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path) as url:
        proc = run_cli(["-m", "batch=1,2", "tracking.experiment=server", *QUICK], tmp_path,
                       cache_dir, env={"MLFLOW_TRACKING_URI": url})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert not (tmp_path / "mlflow.db").exists()  # MLFLOW_TRACKING_URI won over tracking.uri
        client = MlflowClient(tracking_uri=url)
        runs = client.search_runs([client.get_experiment_by_name("server").experiment_id])
        children = [r for r in runs if r.data.tags.get("sweep.role") == "job"]
        assert len(runs) == 3 and len(children) == 2
        assert all(r.info.status == "FINISHED" and r.data.metrics["fps"] > 0 for r in children)
        art = client.list_artifacts(children[0].info.run_id)
        assert "result.json" in {a.path for a in art}
        assert only_sweep_dir(tmp_path).exists()
