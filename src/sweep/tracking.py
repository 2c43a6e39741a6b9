"""MLflow: one parent run per multirun, one child run per job.

Everything goes through MlflowClient with explicit run ids, never the fluent API's global
"active run", so jobs that share a process (the basic launcher) cannot log into each other.
mlflow is imported here only, when tracking is enabled.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from sweep.config import TrackingConfig

log = logging.getLogger(__name__)

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# never log values of environment variables whose names look like secrets
SECRET = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.I)


def param_key(key: str) -> str:
    """An override's key as MLflow accepts it: `+fault_at` -> `fault_at` (Hydra's +/++/~
    prefixes dropped, other characters MLflow refuses replaced by _)."""
    return re.sub(r"[^\w\-. :/]", "_", key.lstrip("+~"))


def tracking_uri(cfg: TrackingConfig) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri


class Tracker:
    def __init__(self, cfg: TrackingConfig) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(cfg)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_id = self._experiment(cfg.experiment)

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name, tags=EXPERIMENT_KIND)
        except Exception:  # created meanwhile by a parallel job
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def start_parent(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={**tags, "sweep.role": "parent"})
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    def sweep_parent(self, sweep_dir: Path, info: dict[str, Any]) -> str:
        """The parent run of the sweep in `sweep_dir`: the one its sweep.json names, reopened,
        when it is in this store (a resumed sweep); else a new one with the sweep's overrides
        (passwords masked) as params."""
        from sweep.result import redact

        before = info.get("parent_run_id")
        if before and info.get("tracking_uri") == self.uri and self.resume_parent(before):
            return before
        params = {k: redact(v) for k, _, v in
                  (o.partition("=") for o in info.get("overrides", []) if "=" in o)}
        tags = {"sweep.dir": str(sweep_dir.resolve())}
        if info.get("total_jobs"):
            tags["sweep.total_jobs"] = str(info["total_jobs"])
        return self.start_parent(f"sweep-{sweep_dir.parent.name}_{sweep_dir.name}", params, tags)

    def resume_parent(self, run_id: str) -> bool:
        """Reopen the parent run of a resumed sweep; False when it is not in this store."""
        try:
            self.client.update_run(run_id, status="RUNNING")
            return True
        except Exception:
            return False

    def finish_parent(self, run_id: str, metrics: dict[str, float], artifacts: list[Path],
                      failed: bool) -> None:
        self._log_metrics(run_id, metrics)
        for path in artifacts:
            if path.exists():
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def find_job(self, uid: str) -> str | None:
        """The run already logged for the job `uid` (a retried upload must not duplicate it)."""
        runs = self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.`sweep.job_uid` = '{uid}'",
                                       max_results=1)
        return runs[0].info.run_id if runs else None

    def log_job(self, result: dict[str, Any], job_dir: Path, parent_id: str | None) -> str:
        """One child run with the job's params, metrics, environment tags and artifacts; if the
        job (by its uid) was logged before, that run's id, and nothing is logged twice."""
        if existing := self.find_job(result["uid"]):
            return existing
        tags = {f"env.{k}": v for k, v in result["env"].items()}
        tags.update({f"info.{k}": str(v)[:5000] for k, v in result["info"].items()})
        tags.update({"sweep.role": "job", "sweep.status": result["status"],
                     "sweep.job_uid": result["uid"],
                     "sweep.job_dir": str(job_dir.resolve())})
        if result["error"]:
            tags["sweep.error"] = result["error"][:5000]
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=result["job"], tags=tags,
                                     start_time=int(result["started"] * 1000))
        run_id = run.info.run_id
        self._log_params(run_id, result["params"])
        self._log_metrics(run_id, result["metrics"])
        for name in ("result.json", "samples.json", "config.yaml", "error.txt", "job.log"):
            if (job_dir / name).exists():
                self.client.log_artifact(run_id, str(job_dir / name))
        hydra_dir = job_dir / ".hydra"
        if hydra_dir.is_dir():
            self.client.log_artifacts(run_id, str(hydra_dir), artifact_path="hydra")
        end = int((result["started"] + result["duration_s"]) * 1000)
        self.client.set_terminated(run_id, "FINISHED" if result["status"] == "ok" else "FAILED",
                                   end_time=end)
        return run_id

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(param_key(k), str(v)[:6000]) for k, v in params.items()
                 if not SECRET.search(k)]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def _log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500])


def upload_sweep(sweep_dir: Path, uri: str | None = None) -> tuple[int, int, str]:
    """Log a sweep's job folders to MLflow after the fact (MLflow was down, or a new store):
    each job once, by its uid, under the sweep's parent run (created if the store lacks it).
    Returns (uploaded, already there, parent run id)."""
    from sweep.callbacks import SWEEP_FILE, read_sweep_file
    from sweep.result import RESULT_FILE, JobResult, load_result, save_result

    info = read_sweep_file(sweep_dir)
    jobs = [(p.parent, load_result(p.parent)) for p in sorted(sweep_dir.glob(f"*/{RESULT_FILE}"))]
    jobs = [(d, r) for d, r in jobs if r is not None]
    if not jobs:
        raise LookupError(f"no finished job under {sweep_dir}")
    params = jobs[0][1]["params"]
    uri = (uri or os.environ.get("MLFLOW_TRACKING_URI") or info.get("tracking_uri")
           or params.get("tracking.uri") or TrackingConfig.uri)
    tracker = Tracker(TrackingConfig(uri=uri, experiment=params.get("tracking.experiment", "sweep")))
    parent = tracker.sweep_parent(sweep_dir, info)
    info.update(parent_run_id=parent, tracking_uri=tracker.uri)
    (sweep_dir / SWEEP_FILE).write_text(json.dumps(info, indent=2))
    uploaded = already = 0
    for job_dir, data in jobs:
        result = JobResult(**data)
        if tracker.find_job(result.uid):
            already += 1
        else:
            uploaded += 1
        result.info["mlflow_run_id"] = tracker.log_job(result.to_json(), job_dir, parent)
        result.info.pop("mlflow_error", None)
        save_result(result, job_dir)
    failed = sum(r["status"] != "ok" for _, r in jobs)
    tracker.finish_parent(parent, {"jobs_ok": len(jobs) - failed, "jobs_failed": failed}, [],
                          failed > 0)
    return uploaded, already, parent
