"""Running one job of a sweep (or the only one): its typed config, skip when it finished before
(retry a failed one on `resume=retry_failed`), one round of a job measured in rounds, inline or
in a worker process (`isolation=process`), logged to the tracking store (or the store's absence
noted), saved once, its progress line, and the objective an optimising sweeper maximises.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from sweep.config import SweepConfig, TrackingConfig, from_container, job_values, tracking_of
from sweep.lifecycle.outcome import Outcome
from sweep.progress import log as progress_log
from sweep.progress import sweep_bar
from sweep.redact import redact
from sweep.result import (
    RESULT_FILE,
    JobResult,
    SweepRecord,
    config_digest,
    failed_result,
    flatten,
    job_name,
    load_result,
    save_result,
    try_write_config,
)
from sweep.tracking import create_tracker

log = logging.getLogger("sweep")  # the logger name its warnings always had


def swept_params(sweep_dir: Path | None) -> tuple[str, ...]:
    """The params the multirun in `sweep_dir` varies, from its record (none for one job)."""
    return SweepRecord.read(sweep_dir).swept if sweep_dir else ()


def typed_config(data: dict[str, Any]) -> tuple[SweepConfig, str]:
    """The job's typed config, with `resolution: null` made the model's own and written back
    into `data`, so that its config.yaml, digest, params and name hold the resolution it runs
    at; and where that resolution comes from (the job's info `resolution_from`)."""
    cfg = from_container(data)
    source = f"set: resolution={cfg.resolution}"
    if cfg.resolution is None:
        from sweep.job import resolve_resolution  # torch and timm: only for a job that asks

        source = resolve_resolution(cfg)
        data["resolution"] = cfg.resolution
    return cfg, source


def run_job(values: dict[str, Any], job_num: Any, job_dir: Path, sweep_dir: Path | None,
            outcome: Outcome) -> JobResult:
    """One job from its composed values (`hydra` node removed, resolved): run it or skip it,
    log it, save it, print its progress line and count it in `outcome`. `sweep_dir`: the
    multirun's folder, None for a lone job."""
    job_dir.mkdir(parents=True, exist_ok=True)
    data = job_values(values, job_num)
    cfg: SweepConfig | None = None
    refused = resolution_from = ""
    try:
        cfg, resolution_from = typed_config(data)
    except Exception as e:
        # a bad value that could not be checked before the sweep began (an optuna trial's are
        # drawn as it starts; sweep.refusals checks a grid's): a failed job, the sweep goes on
        refused = f"{type(e).__name__}: {e}"
    digest = config_digest(_without_round(data))  # every round of a job measures one config
    tracking = cfg.tracking if cfg else tracking_of(data)
    swept = swept_params(sweep_dir)
    in_rounds = cfg is not None and cfg.bench.round > 0
    if in_rounds:
        result, skipped = _run_one_round(cfg, job_dir, data, digest, swept, resolution_from)
    else:
        result = None if cfg and cfg.force else _finished_before(job_dir, digest)
        if result and result.status != "ok" and data.get("resume") == "retry_failed":
            result = None
        skipped = result is not None
        if skipped:
            os.utime(job_dir / RESULT_FILE)  # counted as done in this run's progress
        else:
            result = _write_config_and_run(cfg, data, refused, job_dir, swept, resolution_from)
            result.info["config_digest"] = digest
    # In rounds, a job is logged once, with all its rounds, after the last one.
    last_round = not in_rounds or len(result.info.get("rounds_done", [])) + len(
        result.info.get("rounds_failed", {})) >= cfg.bench.rounds
    logging_now = tracking.enabled and last_round
    if logging_now:
        _log_or_note_offline(result, job_dir, tracking, sweep_dir)
    # the digest and the MLflow run id join the saved result
    saved = not (logging_now or not skipped) or save_result(result, job_dir)
    progress_log.info(redact(progress_line(result, sweep_dir, skipped)))  # console and app.log
    outcome.job_ended(result.status == "ok", saved, in_multirun=sweep_dir is not None)
    if result.status != "ok" and sweep_dir is None:
        print(f"error: {redact(result.error or '')}", file=sys.stderr)
    return result


def _finished_before(job_dir: Path, digest: str) -> JobResult | None:
    """The job folder's complete result for this very config, if there is one."""
    saved = load_result(job_dir)
    if saved is None or saved.get("info", {}).get("config_digest") != digest:
        return None
    return JobResult(**saved)


def _run_inline_or_isolated(cfg: SweepConfig, job_dir: Path, swept: tuple[str, ...]) -> JobResult:
    if cfg.isolation == "process":
        from sweep.isolation import run_isolated

        return run_isolated(cfg, job_dir)
    from sweep.job import run_job as measure_job

    return measure_job(cfg, job_dir, swept)


def _write_config_and_run(cfg: SweepConfig | None, data: dict[str, Any], refused: str,
                          job_dir: Path, swept: tuple[str, ...],
                          resolution_from: str = "") -> JobResult:
    """Write the job's config and run it (or record why it could not run: `refused`), named as
    its folder."""
    unwritable = try_write_config(job_dir, data)
    if cfg and unwritable and cfg.isolation == "process":  # the worker reads config.yaml
        result = failed_result(flatten(cfg), unwritable)
    elif cfg:
        result = _run_inline_or_isolated(cfg, job_dir, swept)
    else:
        result = failed_result(flatten(data), refused)
    result.job = job_name(result.params, swept)  # as its folder (an isolated job's too)
    if resolution_from:
        result.info["resolution_from"] = resolution_from
    if not cfg:
        save_result(result, job_dir)  # uploaded with the run, as a job's own would be
    return result


def _without_round(data: dict[str, Any]) -> dict[str, Any]:
    bench = {k: v for k, v in (data.get("bench") or {}).items() if k != "round"}
    return {**data, "bench": bench}


def _run_one_round(cfg: SweepConfig, job_dir: Path, data: dict[str, Any], digest: str,
                   swept: tuple[str, ...], resolution_from: str) -> tuple[JobResult, bool]:
    """One round of a job measured in rounds: run it unless this round is done, record it, and
    return the job's result over its rounds so far (and whether this round was skipped)."""
    from sweep import rounds

    number = cfg.bench.round
    saved = load_result(job_dir)
    if saved is not None and saved.get("info", {}).get("config_digest") != digest:
        saved = None
    if saved is not None and not cfg.force and number in rounds.done(job_dir, digest):
        return JobResult(**saved), True
    latest = _write_config_and_run(cfg, data, "", job_dir, swept, resolution_from)
    latest.info["config_digest"] = digest
    records = rounds.record(job_dir, number, digest, latest)
    result = rounds.combine(latest, records, cfg.bench.rounds)
    if saved is not None:  # one job, one uid over its rounds: logged to MLflow once
        result.uid = saved["uid"]
    save_result(result, job_dir)
    return result, False


def _log_or_note_offline(result: JobResult, job_dir: Path, tracking: TrackingConfig,
                         sweep_dir: Path | None) -> None:
    """Log the job under the sweep's parent run, unless the sweep found the store offline. A
    skipped job is looked up again (by its uid): a store that was deleted or emptied since
    gets it back, under this sweep's parent run."""
    logged_as = result.info.get("mlflow_run_id")
    record = SweepRecord.read(sweep_dir) if sweep_dir else SweepRecord()
    if record.tracking_offline:  # said once, when the multirun started
        result.info["mlflow_error"] = f"not tried: {record.tracking_offline}"
        return
    _log_to_tracking(result, job_dir, tracking, record.parent_run_id, sweep_dir)
    if logged_as and result.info.get("mlflow_run_id") not in (None, logged_as):
        progress_log.info(f"{result.job}: logged to MLflow again (the store no longer "
                          f"held run {logged_as})")


def _log_to_tracking(result: JobResult, job_dir: Path, tracking: TrackingConfig,
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
            SweepRecord.note_offline(sweep_dir, result.info["mlflow_error"])


def progress_line(result: JobResult, sweep_dir: Path | None, skipped: bool = False) -> str:
    """The job's line on the console and in app.log: what it measured (or why it failed),
    and in a multirun how far the sweep (or the job's rounds) has come."""
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
    if notes := result.info.get("stability"):
        what += "  THROTTLED" if result.info.get("throttle") else "  UNSTEADY"
        what += f" ({len(notes)} note(s) in the report)"
    if sweep_dir is None:
        return f"{result.job}: {what}"
    if planned := result.info.get("rounds_planned"):  # in rounds: which round, of how many
        done = len(result.info.get("rounds_done", []))
        return f"[round {result.params.get('bench.round')}/{planned}] {result.job}: {what}  " \
               f"({done} round(s) of this job done)"
    record = SweepRecord.read(sweep_dir)
    finished = [load_result(p.parent) for p in sweep_dir.glob(f"*/{RESULT_FILE}")
                if p.stat().st_mtime >= record.started]
    done = sum(r is not None for r in finished)
    failed = sum(r is not None and r["status"] != "ok" for r in finished)
    bar = sweep_bar(done, failed, record.total_jobs, time.time() - record.started)
    return f"[{done}/{record.total_jobs or '?'}] {result.job}: {what}  {bar}"


def objective(result: JobResult) -> float:
    """What optimising sweepers (hydra/sweeper=optuna) maximise: `max_qps_at_slo` when the job
    searched under an SLO, else `fps`; NaN, which our Optuna sweeper tells the study as a failed
    trial, for a job that failed, has wrong outputs, was overloaded or met no SLO."""
    m = result.metrics
    slo = result.params.get("scenario.slo_ms") is not None
    if result.status != "ok" or m.get("correct") == 0 or (
            result.info.get("overloaded") and not slo):  # under an SLO: the rate it met
        return math.nan
    value = m.get("max_qps_at_slo") if slo else m.get("fps")
    return float(value) if value is not None else math.nan
