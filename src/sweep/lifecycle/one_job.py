"""Running one job of a sweep (or the only one): its typed config, skip when it finished before
(retry a failed one on `resume=retry_failed`), one round of a job measured in rounds, inline or
in a worker process (`isolation=process`), logged to the tracking store (or the store's absence
noted), saved once, its progress line, and the objective an optimising sweeper maximises.
"""

from __future__ import annotations

import contextlib
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
from sweep.progress import measured as progress_measured
from sweep.progress import sweep_bar
from sweep.redact import redact, without_credentials
from sweep.result import (
    RESULT_FILE,
    ROUNDS_FILE,
    JobResult,
    SweepRecord,
    config_digest,
    failed_result,
    flatten,
    job_name,
    load_result,
    read_rounds,
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
    savable = True
    if in_rounds:
        result, skipped, savable = _run_one_round(cfg, job_dir, data, digest, swept,
                                                  resolution_from)
    else:
        if cfg and sweep_dir is None and cfg.bench.rounds > 1:
            log.warning("bench.rounds=%d is ignored: rounds are a multirun's (python -m sweep "
                        "-m ... bench.rounds=%d); this single job is measured once",
                        cfg.bench.rounds, cfg.bench.rounds)
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
    saved = not (logging_now or not skipped) or not savable or save_result(result, job_dir)
    progress_log.info(redact(progress_line(result, sweep_dir, skipped, job_dir)))  # + app.log
    if sweep_dir is None:
        progress_log.info(redact(where_it_went(result, job_dir, tracking)))
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
                   swept: tuple[str, ...], resolution_from: str) -> tuple[JobResult, bool, bool]:
    """One round of a job measured in rounds: run it unless this round is done, record it, and
    return the job's result over its rounds so far, whether this round was skipped and whether
    that result may be saved (not while it lacks rounds the saved result had: a damaged rounds
    file is re-measured before its finished result is replaced)."""
    from sweep import rounds

    number = cfg.bench.round
    saved = load_result(job_dir)
    if saved is not None and saved.get("info", {}).get("config_digest") != digest:
        saved = None
    records = rounds.of_config(job_dir, digest)
    if saved is not None and not cfg.force and number in rounds.done(records):
        return JobResult(**saved), True, True
    latest = _write_config_and_run(cfg, data, "", job_dir, swept, resolution_from)
    latest.info["config_digest"] = digest
    records = rounds.record(job_dir, number, digest, latest, records)
    result = rounds.combine(latest, records, cfg.bench.rounds)
    if saved is not None:  # one job, one uid over its rounds: logged to MLflow once
        result.uid = saved["uid"]
    keep = saved is None or rounds.covers(result, saved)
    if keep:
        save_result(result, job_dir)
    else:  # the round's job wrote its own figures over the finished result: put it back
        save_result(JobResult(**saved), job_dir)
    return result, False, keep


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


def progress_line(result: JobResult, sweep_dir: Path | None, skipped: bool = False,
                  job_dir: Path | None = None) -> str:
    """The job's line on the console and in app.log: what it measured (or why it failed), and
    in a multirun how far the sweep has come (in rounds: this round's own figure, and the whole
    plan of rounds x jobs)."""
    if planned := result.info.get("rounds_planned"):
        return _round_line(result, sweep_dir, skipped, job_dir, planned)
    what = _outcome(result, result.status, result.error, result.metrics, skipped)
    what += _stability(result, sweep_dir, job_dir)
    if sweep_dir is None:
        return f"{result.job}: {what}"
    record = SweepRecord.read(sweep_dir)
    finished = [load_result(p.parent) for p in sweep_dir.glob(f"*/{RESULT_FILE}")
                if p.stat().st_mtime >= record.started]
    done = sum(r is not None for r in finished)
    failed = sum(r is not None and r["status"] != "ok" for r in finished)
    bar = sweep_bar(done, failed, record.total_jobs, time.time() - record.started)
    return f"[{done}/{record.total_jobs or '?'}] {result.job}: {what}  {bar}"


def _outcome(result: JobResult, status: str, error: str | None, metrics: dict[str, float],
             skipped: bool) -> str:
    """What was measured (`metrics`, with the job's facts) or why it failed."""
    if status == "ok":
        what = progress_measured(metrics, result.info)
        if metrics.get("correct") == 0:
            what += f"  OUTPUTS WRONG: {result.info.get('correctness')}"
    else:
        what = f"FAILED  {error}"
    if skipped:
        rerun = "force=true" if status == "ok" else "resume=retry_failed"
        what = f"skipped, finished before ({what}; {rerun} re-runs it)"
    return what


def _stability(result: JobResult, sweep_dir: Path | None, job_dir: Path | None) -> str:
    """UNSTEADY or THROTTLED, and where its notes are: the sweep's report, or a lone job's
    result.json (a lone job has no report)."""
    notes = result.info.get("stability")
    if not notes:
        return ""
    word = "THROTTLED" if result.info.get("throttle") else "UNSTEADY"
    count = f"{len(notes)} note{'s' if len(notes) > 1 else ''}"
    if sweep_dir is not None:
        return f"  {word} ({count} in the report)"
    where = job_dir / RESULT_FILE if job_dir else RESULT_FILE
    return f"  {word} ({count}: info.stability in {where})"


def _round_line(result: JobResult, sweep_dir: Path | None, skipped: bool,
                job_dir: Path | None, planned: int) -> str:
    """`[round 2/3] job: round 2 <its own figure or failure>; median of 2 rounds <figure>  <bar
    over every round of every job>`."""
    number = result.params.get("bench.round")
    own = next((r for r in read_rounds(job_dir) if r.get("round") == number), None) \
        if job_dir else None
    if own is not None:
        what = _outcome(result, own["status"], own.get("error"), own.get("metrics") or {},
                        skipped)
    else:
        what = _outcome(result, result.status, result.error, result.metrics, skipped)
    done = len(result.info.get("rounds_done", []))
    if done > 1 and result.status == "ok":
        median = progress_measured(result.metrics, result.info).removeprefix("ok  ")
        what += f"; median of {done} rounds: {median}"
    what += _stability(result, sweep_dir, job_dir)
    head = f"[round {number}/{planned}] {result.job}: round {number} {what}"
    return f"{head}  {_plan_bar(sweep_dir, number, job_dir)}" if sweep_dir else head


def _plan_bar(sweep_dir: Path, number: Any, job_dir: Path | None) -> str:
    """The sweep bar over the whole plan (rounds x jobs), at this job's place in it."""
    record = SweepRecord.read(sweep_dir)
    plan, jobs = record.round_plan or [], record.total_jobs or 0
    total = len(plan) * jobs or None
    position = 0
    with contextlib.suppress(ValueError, TypeError, IndexError):
        job_num = int(str(job_dir.name).split("_", 1)[0]) if job_dir else None
        position = (int(number) - 1) * jobs + plan[int(number) - 1].index(job_num) + 1
    failed = sum(r.get("status") != "ok" for p in sweep_dir.glob(f"*/{ROUNDS_FILE}")
                 for r in read_rounds(p.parent))
    return sweep_bar(position, failed, total, time.time() - record.started)


def where_it_went(result: JobResult, job_dir: Path, tracking: TrackingConfig) -> str:
    """A lone job's closing lines: its result file, the report that compares it with the jobs
    beside it, and its MLflow run with the link to the runs table."""
    lines = [f"result: {job_dir / RESULT_FILE} (samples, config and log beside it)",
             f"compare it with the jobs beside it: python -m sweep.report {job_dir.parent}"]
    if run_id := result.info.get("mlflow_run_id"):
        try:
            lines.append(f"MLflow: {_run_link(create_tracker(tracking), run_id)}")
        except Exception as e:  # the store went away after logging: the file has it all
            lines.append(f"MLflow: run {run_id} (no link: {e})")
    elif error := result.info.get("mlflow_error"):
        lines.append(f"MLflow: not logged ({error}); upload it later with python -m "
                     f"sweep.report {job_dir.parent} --log-to-mlflow")
    return "\n".join(lines)


def _run_link(tracker, run_id: str) -> str:
    """The run's page in the store's web UI (a server's address, or how to open a local one)."""
    path = (tracker.ui_path() or "").split("?")[0]
    page = f"{path}/{run_id}" if path else ""
    uri = without_credentials(redact(tracker.uri))
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000/{page}"


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
