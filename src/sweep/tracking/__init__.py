"""Tracking stores behind one small interface (`Tracker`, tracking/base.py), the one resolver of
the tracking URI, and the upload of a sweep that ran while its store was unreachable.

The URI's precedence, everywhere: an explicit one (`--tracking-uri`), then the environment's
`MLFLOW_TRACKING_URI`, then the one the sweep recorded in its sweep file (reports and uploads of
a finished sweep), then the config's `tracking.uri`, then `sqlite:///mlflow.db`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from sweep.config import TrackingConfig
from sweep.redact import host_port, masked
from sweep.result import JobResult, SweepRecord, job_dirs, load_result, save_result
from sweep.tracking.base import Tracker

__all__ = ["DEFAULT_URI", "Tracker", "create_tracker", "resolve_uri", "unreachable",
           "upload_sweep"]

DEFAULT_URI = TrackingConfig.uri
# one short attempt per sweep: a dead server must not cost MLflow's retries for every job
CONNECT_TIMEOUT_S = 5.0
_open: dict[tuple[str, str, str], Tracker] = {}


def resolve_uri(explicit: str | None = None, recorded: str | None = None,
                configured: str | None = None) -> str:
    """The tracking URI to use (precedence in the module docstring); a recorded URI whose
    password was masked is passed over (give it with --tracking-uri or MLFLOW_TRACKING_URI)."""
    recorded, configured = (None if masked(u) else u for u in (recorded, configured))
    return (explicit or os.environ.get("MLFLOW_TRACKING_URI") or recorded or configured
            or DEFAULT_URI)


# servers probed before a sweep opens its store, by scheme (a driver suffix, as in
# postgresql+psycopg, is dropped), with their default ports: for a dead database MLflow's engine
# retries with backoff for about 100 s before it gives up
SERVER_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "postgres": 5432, "mysql": 3306,
                "mssql": 1433}


def unreachable(uri: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why the tracking server at `uri` (MLflow's, or the database of a database store) cannot
    be reached within `timeout_s`, or None. A local store's failures surface when it is opened.
    The reason names the host and port only, never the URI's credentials."""
    parsed = host_port(uri)  # as the store's library parses it: a password may hold '/'
    if parsed is None or (scheme := parsed[0].split("+", 1)[0]) not in SERVER_PORTS:
        return None
    host, port = parsed[1], parsed[2] or SERVER_PORTS[scheme]
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as e:
        return f"{host}:{port} did not answer within {timeout_s:g} s ({e})"


def create_tracker(cfg: TrackingConfig, explicit_uri: str | None = None,
                   recorded_uri: str | None = None, read_only: bool = False) -> Tracker:
    """The store `cfg` names, at the resolved URI; one per store and experiment in a process
    (jobs of the basic launcher share it). `read_only`: a reader's, which creates no store and
    no experiment (a LookupError says what is missing). A server that does not answer is a
    ConnectionError at once (`unreachable`)."""
    uri = resolve_uri(explicit_uri, recorded_uri, cfg.uri)
    key = (type(cfg).impl, uri, cfg.experiment, read_only)
    if key not in _open:
        # every entry point (a lone job, an upload, a report) fails in seconds, not after
        # the store client's retries
        if reason := unreachable(uri):
            raise ConnectionError(f"tracking store not reachable: {reason}")
        _open[key] = cfg.implementation()(cfg, uri, read_only=read_only)
    return _open[key]


def upload_sweep(sweep_dir: Path, uri: str | None = None) -> tuple[int, int, str]:
    """Log a sweep's job folders after the fact (the store was down, or it is a new one): each
    job once, by its uid, under the sweep's parent run (created if the store lacks it).
    Returns (uploaded, already there, parent run id)."""
    record = SweepRecord.read(sweep_dir)
    jobs = [(d, load_result(d)) for d in job_dirs(sweep_dir)]
    jobs = [(d, r) for d, r in jobs if r is not None]
    if not jobs:
        raise LookupError(f"no finished job under {sweep_dir}")
    params = jobs[0][1]["params"]
    cfg = TrackingConfig(uri=params.get("tracking.uri", DEFAULT_URI),
                         experiment=params.get("tracking.experiment", TrackingConfig.experiment))
    tracker = create_tracker(cfg, uri, record.tracking_uri)
    parent = tracker.open_sweep(sweep_dir, record.as_dict())
    record.parent_run_id, record.tracking_uri = parent, tracker.uri
    record.write(sweep_dir)
    uploaded = already = 0
    for job_dir, data in jobs:
        result = JobResult(**data)
        if tracker.has_job(result.uid):
            already += 1
        else:
            uploaded += 1
        result.info["mlflow_run_id"] = tracker.log_job(result.to_json(), job_dir, parent)
        result.info.pop("mlflow_error", None)
        save_result(result, job_dir)
    failed = sum(r["status"] != "ok" for _, r in jobs)
    tracker.finish_sweep(parent, {"jobs_ok": len(jobs) - failed, "jobs_failed": failed},
                         failed > 0)
    return uploaded, already, parent
