"""Opening and closing a multirun, on the submitting machine: the sweep record and the tracking
parent run when it starts (reopened on resume), the report, the counts and the finished parent
run when it ends, and the parent run marked KILLED when a signal ends the process.

Jobs (possibly elsewhere) find the parent run id and the job count in the sweep record
(`sweep.result.SweepRecord`).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweep.config import TrackingConfig
from sweep.lifecycle.folder_lock import hold_folder
from sweep.lifecycle.outcome import Outcome
from sweep.redact import redact, without_credentials
from sweep.refusals import foreign_sweep, refuse_foreign
from sweep.report import Options, write_reports
from sweep.result import REPORT_FILES, SweepRecord
from sweep.sources import load_dir
from sweep.tracking import create_tracker, resolve_uri, unreachable

log = logging.getLogger("sweep.callbacks")  # the logger name its warnings always had


def open_sweep(sweep_dir: Path, overrides: list[str], total_jobs: int | None,
               tracking: TrackingConfig, reuse_dir: bool, outcome: Outcome) -> SweepRecord:
    """Make the sweep folder and its record, with the parent run (the one a resumed sweep
    recorded, else a new one); refuse (exit 2) a folder another sweep is running in, and one
    that holds another sweep unless `reuse_dir`. A store that cannot be reached is noted in
    the record, once for every job."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    hold_folder(sweep_dir)  # exit 2 while another sweep runs in this folder
    record = SweepRecord(started=time.time(), overrides=overrides, total_jobs=total_jobs)
    before = SweepRecord.read(sweep_dir)
    why = foreign_sweep(before.overrides, overrides) if before.overrides else None
    if why and not reuse_dir:
        refuse_foreign(sweep_dir, why)
    if why:
        before = SweepRecord()  # reuse_dir=true: this sweep gets a parent run of its own
    if tracking.enabled:
        _open_parent_run(sweep_dir, record, before, tracking)
    record.write(sweep_dir)
    if record.parent_run_id:
        outcome.open_parent = (tracking, record.parent_run_id)
    print(f"sweep: {record.total_jobs} jobs -> {sweep_dir}", flush=True)
    return record


def _open_parent_run(sweep_dir: Path, record: SweepRecord, before: SweepRecord,
                     tracking: TrackingConfig) -> None:
    """Set the record's parent run and store, or why the store was not reached."""
    try:
        reason = unreachable(resolve_uri(configured=tracking.uri))
        if reason:
            raise ConnectionError(reason)
        tracker = create_tracker(tracking)
        # a re-run of the same sweep (resume) reopens the parent run it recorded
        recorded = dataclasses.replace(record, parent_run_id=before.parent_run_id,
                                       tracking_uri=before.tracking_uri)
        record.parent_run_id = tracker.open_sweep(sweep_dir, recorded.as_dict())
        record.tracking_uri = tracker.uri
    except Exception as e:  # results still land in the job folders; jobs do not retry
        record.tracking_offline = f"{type(e).__name__}: {e}"
        log.warning("MLflow not reachable (%s): the sweep goes on without it and its "
                    "results wait in %s for python -m sweep.report %s --log-to-mlflow",
                    e, sweep_dir, sweep_dir)


def close_sweep(sweep_dir: Path, tracking: TrackingConfig, outcome: Outcome) -> None:
    """Write the report, count the sweep's failed jobs into `outcome`, finish the parent run
    (FAILED when any job failed, no report was written or a search stopped before its end) and
    say where everything is."""
    rows: list[dict[str, Any]] = []
    reported = True
    try:
        sweep = load_dir(sweep_dir)
        rows = sweep.rows
        for reason in sweep.corrupt:  # counted as failed jobs: the exit status is 1
            log.error("%s", reason)
        write_reports(sweep_dir, sweep, Options(plots=True))
    except Exception:  # the results stay in the job folders; the parent run still finishes
        reported = False
        log.exception("report not written; rebuild it with python -m sweep.report %s",
                      sweep_dir)
    failed = sum(r["status"] != "ok" for r in rows) + outcome.unsaved_jobs
    total = len(rows) + outcome.unsaved_jobs
    stopped = outcome.search_stopped  # an optimising sweeper's search that raised
    outcome.sweep_ended(failed, reported)
    if stopped:
        log.error("%s", stopped)
        outcome.failed_jobs = max(outcome.failed_jobs, 1)
    record = SweepRecord.read(sweep_dir)
    if record.parent_run_id:
        try:
            tracker = create_tracker(tracking)
            tracker.log_report(record.parent_run_id, sweep_dir)
            tracker.finish_sweep(record.parent_run_id,
                                 {"jobs_ok": total - failed, "jobs_failed": failed,
                                  "wall_s": time.time() - record.started},
                                 failed > 0 or not reported or bool(stopped))
        except Exception as e:
            log.warning("MLflow parent run not finished (%s)", e)
    print(f"sweep done: {total} jobs, {failed} failed; "
          f"summary in {sweep_dir / REPORT_FILES[2]}", flush=True)
    if record.parent_run_id:
        try:
            print(f"MLflow: {_ui_link(create_tracker(tracking))}", flush=True)
        except Exception as e:  # the store went away: the results are in the folders
            log.warning("MLflow link not printed (%s)", e)


def _ui_link(tracker) -> str:
    """The runs table's address (a server's) or how to open it (a local store's)."""
    path, uri = tracker.ui_path() or "", without_credentials(redact(tracker.uri))
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{path}"
    return f"mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000/{path}"


# --- ending on a signal ---------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM (what timeout, SLURM and systemd send), raised like Ctrl-C's KeyboardInterrupt so
    that both end a sweep the same way: workers killed by process group, parent run KILLED."""

    signum = signal.SIGTERM


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def raise_on_sigterm() -> None:
    """From now on SIGTERM ends the process as Ctrl-C does (`Terminated`)."""
    signal.signal(signal.SIGTERM, _terminate)


def close_interrupted(outcome: Outcome) -> None:
    """Mark the running multirun's parent run KILLED (its finished jobs are logged already)."""
    if outcome.open_parent is None:
        return
    tracking, parent_id = outcome.open_parent
    outcome.open_parent = None
    try:
        create_tracker(tracking).kill_sweep(parent_id)
    except Exception as e:
        log.warning("MLflow parent run %s not marked KILLED (%s)", parent_id, e)


def run_to_exit_status(run: Callable[[], Any], outcome: Outcome) -> int:
    """Run `run` (Hydra's entry: one job or a multirun) and return the process's exit status:
    the outcome's, or 128 + the signal's number when Ctrl-C or SIGTERM ended it (its parent
    run closed as KILLED first)."""
    try:
        run()
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
        close_interrupted(outcome)
        print(f"sweep ended by {signal.Signals(signum).name}: unfinished jobs left no result; "
              "run the same command again to resume", file=sys.stderr)
        return 128 + signum
    return outcome.exit_status()
