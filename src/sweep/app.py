"""Hydra entry point: compose, build the typed config once, run or skip the job, record it,
report progress, return the headline.

    python -m sweep                                     # one job, the embedded default
    python -m sweep -m runtime=torch,onnx batch=1,8,32  # a multirun sweep
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweep import state
from sweep.config import SweepConfig, TrackingConfig, from_container, register_configs, tracking_of
from sweep.paths import conf_dir
from sweep.redact import install_log_filter, redact
from sweep.result import (
    RESULT_FILE,
    JobResult,
    config_digest,
    failed_result,
    flatten,
    load_result,
    read_sweep_file,
    save_result,
    try_write_config,
    write_sweep_file,
)
from sweep.tracking import create_tracker

log = logging.getLogger("sweep")

register_configs()
install_log_filter()  # before Hydra logs anything: its echo of the overrides is masked too
# hydra/launcher=local_gpus runs as many jobs at once as `gpus` lists
OmegaConf.register_new_resolver("sweep_count", lambda v: len(v) if v else 1, replace=True)


def _log_job(result: JobResult, job_dir: Path, tracking: TrackingConfig,
             parent_id: str | None, sweep_dir: Path | None) -> None:
    """Log the finished job and note the run id (or the error) in its info; on failure keep
    going (result.json holds everything), and in a multirun let the later jobs skip the store
    rather than each wait for it."""
    try:
        run_id = create_tracker(tracking).log_job(result.to_json(), job_dir, parent_id)
        result.info["mlflow_run_id"] = run_id
        result.info.pop("mlflow_error", None)
    except Exception as e:
        where = sweep_dir or "DIR"
        log.warning("MLflow logging failed for %s (%s); the result is in %s; upload it later "
                    "with python -m sweep.report %s --log-to-mlflow", result.job, e, job_dir,
                    where)
        result.info["mlflow_error"] = f"{type(e).__name__}: {e}"
        if sweep_dir is not None:
            info = read_sweep_file(sweep_dir)
            info["tracking_offline"] = result.info["mlflow_error"]
            with contextlib.suppress(OSError):
                write_sweep_file(sweep_dir, info)


def _progress(result: JobResult, sweep_dir: Path | None, skipped: bool = False) -> str:
    m = result.metrics
    if result.status == "ok":
        what = f"ok  {m['infer_ms_per_img']:.3f} ms/img  {m['fps']:,.1f} fps"
        if m.get("correct") == 0:
            what += f"  OUTPUTS WRONG: {result.info['correctness']}"
    else:
        what = f"FAILED  {result.error}"
    if skipped:
        rerun = "force=true" if result.status == "ok" else "resume=retry_failed"
        what = f"skipped, finished before ({what}; {rerun} re-runs it)"
    if sweep_dir is None:
        return f"{result.job}: {what}"
    info = read_sweep_file(sweep_dir)
    total, started = info.get("total_jobs"), info.get("started", 0)
    done = sum(1 for p in sweep_dir.glob(f"*/{RESULT_FILE}") if p.stat().st_mtime >= started)
    left = f"{max(total - done, 0)} remaining" if total else "? remaining"
    return f"[{done}/{total or '?'}] {result.job}: {what}  ({left})"


def _finished_before(job_dir: Path, digest: str) -> JobResult | None:
    """The job folder's complete result for this very config, if there is one."""
    saved = load_result(job_dir)
    if saved is None or saved.get("info", {}).get("config_digest") != digest:
        return None
    return JobResult(**saved)


def _run(cfg: SweepConfig, job_dir: Path) -> JobResult:
    if cfg.isolation == "process":
        from sweep.isolation import run_isolated

        return run_isolated(cfg, job_dir)
    from sweep.job import run_job

    return run_job(cfg, job_dir)


def _resolved(dcfg: DictConfig, job_num: Any) -> dict[str, Any]:
    data = OmegaConf.to_container(dcfg, resolve=True)
    if data.get("fault_at") and job_num in data["fault_at"]:  # fault_at={3:segfault}
        data["fault"] = data["fault_at"][job_num]
    return data


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)
def task(dcfg: DictConfig) -> float:
    """One job. Returns its objective, for optimising sweepers (Optuna)."""
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    sweep_dir = Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    job_dir.mkdir(parents=True, exist_ok=True)
    data = _resolved(dcfg, hc.job.get("num"))
    digest = config_digest(data)
    cfg: SweepConfig | None = None
    try:
        cfg = from_container(data)
    except Exception as e:  # a bad value: a failed job with its reason, the sweep goes on
        refused = f"{type(e).__name__}: {e}"
    tracking = cfg.tracking if cfg else tracking_of(data)
    result = None if cfg and cfg.force else _finished_before(job_dir, digest)
    if result and result.status != "ok" and data.get("resume") == "retry_failed":
        result = None
    skipped = result is not None
    if skipped:
        os.utime(job_dir / RESULT_FILE)  # counted as done in this run's progress
    else:
        unwritable = try_write_config(job_dir, data)
        if cfg and unwritable and cfg.isolation == "process":  # the worker reads config.yaml
            result = failed_result(flatten(cfg), unwritable)
        elif cfg:
            result = _run(cfg, job_dir)
        else:
            result = failed_result(flatten(data), refused)
            save_result(result, job_dir)  # uploaded with the run, as a job's own would be
        result.info["config_digest"] = digest
    # a skipped job is looked up again (by its uid): a store that was deleted or emptied since
    # gets it back, under this sweep's parent run
    logged_as = result.info.get("mlflow_run_id")
    logging_now = tracking.enabled
    if logging_now:
        sweep_info = read_sweep_file(sweep_dir) if sweep_dir else {}
        if sweep_info.get("tracking_offline"):  # said once, when the multirun started
            result.info["mlflow_error"] = f"not tried: {sweep_info['tracking_offline']}"
        else:
            _log_job(result, job_dir, tracking, sweep_info.get("parent_run_id"), sweep_dir)
            if logged_as and result.info.get("mlflow_run_id") not in (None, logged_as):
                print(f"{result.job}: logged to MLflow again (the store no longer held run "
                      f"{logged_as})", flush=True)
    # the digest and the MLflow run id join the saved result
    if (logging_now or not skipped) and not save_result(result, job_dir):
        state.unsaved_jobs += 1
    print(redact(_progress(result, sweep_dir, skipped)), flush=True)
    if result.status != "ok":
        state.failed_jobs += 1 if sweep_dir is None else 0  # multiruns count at the end
        if sweep_dir is None:
            print(f"error: {redact(result.error or '')}", file=sys.stderr)
    return objective(result)


def objective(result: JobResult) -> float:
    """What optimising sweepers (hydra/sweeper=optuna) maximise: `max_qps_at_slo` when the job
    searched under an SLO, else `fps`; NaN, which Optuna records as a failed trial, for a job
    that failed, has wrong outputs or met no SLO."""
    m = result.metrics
    if result.status != "ok" or m.get("correct") == 0:
        return math.nan
    slo = result.params.get("scenario.slo_ms") is not None
    value = m.get("max_qps_at_slo") if slo else m.get("fps")
    return float(value) if value is not None else math.nan


class Terminated(KeyboardInterrupt):
    """SIGTERM (what timeout, SLURM and systemd send), raised like Ctrl-C's KeyboardInterrupt so
    that both end a sweep the same way: workers killed by process group, parent run KILLED."""

    signum = signal.SIGTERM


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def _close_interrupted() -> None:
    """Mark the running multirun's parent run KILLED (its finished jobs are logged already)."""
    if state.open_parent is None:
        return
    tracking, parent_id = state.open_parent
    state.open_parent = None
    try:
        create_tracker(tracking).kill_sweep(parent_id)
    except Exception as e:
        log.warning("MLflow parent run %s not marked KILLED (%s)", parent_id, e)


def main() -> None:
    """`python -m sweep`: exit status 1 when any job failed, 128 + the signal's number when a
    signal ended it."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        task()
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
        _close_interrupted()
        print(f"sweep ended by {signal.Signals(signum).name}: unfinished jobs left no result; "
              "run the same command again to resume", file=sys.stderr)
        sys.exit(128 + signum)
    sys.exit(1 if state.failed_jobs else 0)
