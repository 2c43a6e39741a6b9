"""Hydra entry point: compose, run one job, record it, report progress, return the headline.

    python -m sweep                                     # one job, the embedded default
    python -m sweep -m runtime=torch,onnx batch=1,8,32  # a multirun sweep
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweep import state
from sweep.config import TrackingConfig, register_configs
from sweep.paths import conf_dir

log = logging.getLogger("sweep")

register_configs()
# hydra/launcher=local_gpus runs as many jobs at once as `gpus` lists
OmegaConf.register_new_resolver("sweep_count", lambda v: len(v) if v else 1, replace=True)

_trackers: dict[tuple[str, str], object] = {}


def _tracker(cfg: TrackingConfig):
    from sweep.tracking import Tracker, tracking_uri

    key = (tracking_uri(cfg), cfg.experiment)
    if key not in _trackers:
        _trackers[key] = Tracker(cfg)
    return _trackers[key]


def _log_to_mlflow(result, job_dir: Path, tracking: TrackingConfig, parent_id: str | None) -> None:
    """Log the finished job and note the run id (or the error) in its info; on failure keep
    going (result.json holds everything)."""
    try:
        run_id = _tracker(tracking).log_job(result.to_json(), job_dir, parent_id)
        result.info["mlflow_run_id"] = run_id
        result.info.pop("mlflow_error", None)
    except Exception as e:
        log.warning("MLflow logging failed for %s (%s); the result is in %s; upload it later "
                    "with python -m sweep.report DIR --log-to-mlflow", result.job, e, job_dir)
        result.info["mlflow_error"] = f"{type(e).__name__}: {e}"


def _progress(result, sweep_dir: Path | None, skipped: bool = False) -> str:
    m = result.metrics
    if result.status == "ok":
        what = f"ok  {m['infer_ms_per_img']:.3f} ms/img  {m['fps']:,.1f} fps"
        if m.get("correct") == 0:
            what += f"  OUTPUTS WRONG: {result.info['correctness']}"
    else:
        what = f"FAILED  {result.error}"
    if skipped:
        what = f"skipped, finished before ({what}; force=true re-runs it)"
    if sweep_dir is None:
        return f"{result.job}: {what}"
    from sweep.callbacks import read_sweep_file
    from sweep.result import RESULT_FILE

    info = read_sweep_file(sweep_dir)
    total, started = info.get("total_jobs"), info.get("started", 0)
    done = sum(1 for p in sweep_dir.glob(f"*/{RESULT_FILE}") if p.stat().st_mtime >= started)
    left = f"{max(total - done, 0)} remaining" if total else "? remaining"
    return f"[{done}/{total or '?'}] {result.job}: {what}  ({left})"


CONTROL_KEYS = ("tracking", "force", "isolation", "timeout_s", "gpus")  # how, not what, to run


def config_digest(data: dict) -> str:
    """Identity of what a job measures: the resolved config without the keys that only say how
    it is run, so a resumed sweep recognises its finished jobs."""
    what = {k: v for k, v in data.items() if k not in CONTROL_KEYS}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished_before(job_dir: Path, digest: str):
    """The job folder's complete result for this very config, if there is one."""
    from sweep.result import JobResult, load_result

    saved = load_result(job_dir)
    if saved is None or saved.get("info", {}).get("config_digest") != digest:
        return None
    return JobResult(**saved)


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)
def task(dcfg: DictConfig) -> float | None:
    """One job. Returns fps so that optimising sweepers (Optuna) can maximise it."""
    from sweep.callbacks import read_sweep_file
    from sweep.result import RESULT_FILE, save_result

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    sweep_dir = Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    job_dir.mkdir(parents=True, exist_ok=True)
    data = OmegaConf.to_container(dcfg, resolve=True)
    if data.get("fault_at") and hc.job.get("num") in data["fault_at"]:  # fault_at={3:segfault}
        data["fault"] = data["fault_at"][hc.job.num]
    digest = config_digest(data)
    tracking = TrackingConfig(**data["tracking"])
    result = None if dcfg.force else _finished_before(job_dir, digest)
    skipped = result is not None
    if skipped:
        os.utime(job_dir / RESULT_FILE)  # counted as done in this run's progress
    else:
        (job_dir / "config.yaml").write_text(OmegaConf.to_yaml(data))
        if dcfg.isolation == "process":
            from sweep.isolation import run_isolated

            result = run_isolated(data, job_dir, float(dcfg.timeout_s), dcfg.gpus)
        else:
            from sweep.job import run_from_container

            result = run_from_container(data, job_dir)
        result.info["config_digest"] = digest
    logging_now = tracking.enabled and not result.info.get("mlflow_run_id")
    if logging_now:
        parent = read_sweep_file(sweep_dir).get("parent_run_id") if sweep_dir else None
        _log_to_mlflow(result, job_dir, tracking, parent)
    if logging_now or not skipped:  # the digest and the MLflow run id join the saved result
        save_result(result, job_dir)
    print(_progress(result, sweep_dir, skipped), flush=True)
    if result.status != "ok":
        state.failed_jobs += 1 if sweep_dir is None else 0  # multiruns count at the end
        if sweep_dir is None:
            print(f"error: {result.error}", file=sys.stderr)
        return None
    return result.metrics["fps"]


def main() -> None:
    """`python -m sweep`: exit status 1 when any job failed."""
    task()
    sys.exit(1 if state.failed_jobs else 0)
