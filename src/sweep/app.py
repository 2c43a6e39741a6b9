"""Hydra entry point: compose, run one job, record it, report progress, return the headline.

    python -m sweep                                     # one job, the embedded default
    python -m sweep -m runtime=torch,onnx batch=1,8,32  # a multirun sweep
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweep import state
from sweep.config import SweepConfig, TrackingConfig, register_configs
from sweep.paths import conf_dir

log = logging.getLogger("sweep")

register_configs()

_trackers: dict[tuple[str, str], object] = {}


def _tracker(cfg: TrackingConfig):
    from sweep.tracking import Tracker, tracking_uri

    key = (tracking_uri(cfg), cfg.experiment)
    if key not in _trackers:
        _trackers[key] = Tracker(cfg)
    return _trackers[key]


def _log_to_mlflow(result, job_dir: Path, tracking: TrackingConfig, parent_id: str | None) -> None:
    """Log the finished job; on failure keep going (result.json holds everything)."""
    from sweep.result import RESULT_FILE, write_json_atomic

    try:
        run_id = _tracker(tracking).log_job(result.to_json(), job_dir, parent_id)
        result.info["mlflow_run_id"] = run_id
    except Exception as e:
        log.warning("MLflow logging failed for %s (%s); the result is in %s", result.job, e, job_dir)
        result.info["mlflow_error"] = f"{type(e).__name__}: {e}"
    write_json_atomic(job_dir / RESULT_FILE, result.to_json())


def _progress(result, sweep_dir: Path | None) -> str:
    m = result.metrics
    if result.status == "ok":
        what = f"ok  {m['infer_ms_per_img']:.3f} ms/img  {m['fps']:,.1f} fps"
        if m.get("correct") == 0:
            what += f"  OUTPUTS WRONG: {result.info['correctness']}"
    else:
        what = f"FAILED  {result.error}"
    if sweep_dir is None:
        return f"{result.job}: {what}"
    from sweep.callbacks import read_sweep_file
    from sweep.result import RESULT_FILE

    total = read_sweep_file(sweep_dir).get("total_jobs")
    done = sum(1 for p in sweep_dir.iterdir() if (p / RESULT_FILE).is_file())
    left = f"{max(total - done, 0)} remaining" if total else "? remaining"
    return f"[{done}/{total or '?'}] {result.job}: {what}  ({left})"


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)
def task(dcfg: DictConfig) -> float | None:
    """One job. Returns fps so that optimising sweepers (Optuna) can maximise it."""
    from sweep.callbacks import read_sweep_file
    from sweep.job import JobResult, flatten, run_job

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    sweep_dir = Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "config.yaml").write_text(OmegaConf.to_yaml(dcfg, resolve=True))
    tracking = TrackingConfig(**OmegaConf.to_container(dcfg.tracking, resolve=True))
    try:
        cfg: SweepConfig = OmegaConf.to_object(dcfg)
        result = run_job(cfg, job_dir)
    except Exception as e:  # a bad value: recorded as a failed job, the sweep goes on
        from sweep.result import RESULT_FILE, write_json_atomic

        result = JobResult(job=job_dir.name.split("_", 1)[-1], status="failed", error=f"{type(e).__name__}: {e}",
                           params=flatten(OmegaConf.to_container(dcfg, resolve=True)))
        write_json_atomic(job_dir / RESULT_FILE, result.to_json())
    if tracking.enabled:
        parent = read_sweep_file(sweep_dir).get("parent_run_id") if sweep_dir else None
        _log_to_mlflow(result, job_dir, tracking, parent)
    print(_progress(result, sweep_dir), flush=True)
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
