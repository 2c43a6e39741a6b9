"""Logging into a real `mlflow server` on 127.0.0.1, started by the test."""

from __future__ import annotations

import pytest
from conftest import QUICK, mlflow_server, run_cli
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def _leaks(root, secret: str) -> list[str]:
    """Every file under `root` whose bytes hold `secret`."""
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_sweep_logs_into_a_server_and_its_token_appears_nowhere(tmp_path, cache_dir):
    """A sweep logs into a real `mlflow server` named by MLFLOW_TRACKING_URI (the README's
    route), here with `http://:token@host` (an empty user name): the token is not on the
    console (MLflow's own "View run" lines included), in no file of the sweep or of the
    server's store and artifacts, in no MLflow param or tag."""
    secret = "S3cretTok9"
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path) as url:
        with_token = url.replace("http://", f"http://:{secret}@")
        proc = run_cli(["-m", "batch=1,2", "tracking.experiment=tok", "hydra.sweep.dir=s",
                        *QUICK], tmp_path, cache_dir, env={"MLFLOW_TRACKING_URI": with_token})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert secret not in proc.stdout + proc.stderr
        assert "MLflow: http://127.0.0.1" in proc.stdout  # the tool's own link, no credentials
        assert not (tmp_path / "mlflow.db").exists()  # MLFLOW_TRACKING_URI won over tracking.uri
        assert (tmp_path / "s" / "report.md").is_file()
        client = MlflowClient(tracking_uri=url)
        runs = client.search_runs([client.get_experiment_by_name("tok").experiment_id])
        assert len(runs) == 3 and secret not in str([(r.data.params, r.data.tags) for r in runs])
        children = [r for r in runs if r.data.tags.get("sweep.role") == "job"]
        assert len(children) == 2
        assert all(r.info.status == "FINISHED" and r.data.metrics["fps"] > 0 for r in children)
        assert "result.json" in {a.path for a in client.list_artifacts(children[0].info.run_id)}
        # resumed without the token: the same store, so the same parent run, reopened
        again = run_cli(["-m", "batch=1,2", "tracking.experiment=tok", "hydra.sweep.dir=s",
                         *QUICK], tmp_path, cache_dir, env={"MLFLOW_TRACKING_URI": url})
        assert again.returncode == 0, again.stderr[-3000:]
        runs = client.search_runs([client.get_experiment_by_name("tok").experiment_id])
        assert sorted(r.data.tags["sweep.role"] for r in runs) == ["job", "job", "parent"]
    assert _leaks(tmp_path, secret) == []


def test_a_database_password_holding_a_slash_reaches_the_store_and_appears_nowhere(
        tmp_path, cache_dir, postgres_uri):
    """SQLAlchemy reads `postgresql://user:pa/ss@host/db` with the password `pa/ss`: the sweep
    reaches that store (no offline note quoting a piece of the password) and masks it."""
    secret = "pa/Secr3tWord"
    uri = postgres_uri.replace("sweep@", f"sweep:{secret}@")
    proc = run_cli(["-m", "batch=1,2", f"tracking.uri={uri}", "tracking.experiment=slash",
                    *QUICK], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MLflow not reachable" not in proc.stderr
    for piece in (secret, "Secr3tWord"):
        assert piece not in proc.stdout + proc.stderr
        assert _leaks(tmp_path, piece) == []
    client = MlflowClient(tracking_uri=postgres_uri)
    runs = client.search_runs([client.get_experiment_by_name("slash").experiment_id])
    assert len(runs) == 3 and "Secr3tWord" not in str([(r.data.params, r.data.tags)
                                                        for r in runs])
