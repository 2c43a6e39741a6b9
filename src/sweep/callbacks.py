"""Hydra callback for multiruns: the tracking parent run, progress counts and the summary.

`on_multirun_*` run on the submitting machine; jobs (possibly elsewhere) find the parent run id
and the job count in the sweep file (`sweep.result.SWEEP_FILE`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweep import state
from sweep.config import CONTROL_KEYS, TrackingConfig
from sweep.redact import redact_file
from sweep.report import Options, write_reports
from sweep.result import REPORT_FILES, read_sweep_file, redact, write_sweep_file
from sweep.sources import load_dir
from sweep.tracking import create_tracker, resolve_uri, unreachable

log = logging.getLogger(__name__)


def sweep_overrides(config: DictConfig) -> list[str]:
    """The sweeper's `params` (experiments set these), then the command line's overrides, which
    win for the same key (the basic sweeper's order)."""
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()]
    overrides += list(config.hydra.overrides.task)
    return overrides


def count_jobs(overrides: list[str]) -> int:
    """Size of the cartesian product the basic sweeper will launch."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    by_key: dict[str, int] = {}
    for o in parsed:
        sweep = o.is_sweep_override()
        by_key[o.get_key_element()] = len(list(o.sweep_string_iterator())) if sweep else 1
    return math.prod(by_key.values()) if by_key else 1


def _grid(overrides: list[str]) -> dict[str, set[str]]:
    """What a sweep's overrides measure: each key's values, without the keys that only say how
    jobs run (CONTROL_KEYS, hydra.*)."""
    out: dict[str, set[str]] = {}
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.get_key_element().lstrip("+~")
        if key.split(".")[0] in CONTROL_KEYS or key.startswith("hydra"):
            continue
        try:
            values = (list(o.sweep_string_iterator()) if o.is_sweep_override()
                      else [o.get_value_element_as_str()])
        except Exception:  # a search space (interval) is not a list of values: compare its text
            values = [str(o.value())]
        out[key] = set(values)
    return out


def foreign_sweep(recorded: list[str], overrides: list[str]) -> str | None:
    """Why a folder whose sweep file recorded `recorded` holds a different sweep than
    `overrides`, or None when `overrides` is the same grid or grows it (more values)."""
    old, new = _grid(recorded), _grid(overrides)
    if old.keys() != new.keys():
        return f"it sweeps {sorted(old)}, this run {sorted(new)}"
    for key in old:
        if not old[key] <= new[key]:
            return (f"it ran {key}={','.join(sorted(old[key]))}, this run "
                    f"{key}={','.join(sorted(new[key]))}")
    return None


def _tracking(config: DictConfig) -> TrackingConfig:
    """The composed config's tracking node, typed by its schema."""
    return OmegaConf.to_object(config.tracking)


class SweepCallback(Callback):
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra has configured this job's log handlers and written its `.hydra/` files (and
        the sweeper its multirun.yaml): mask their secrets before anything reads them."""
        hc = config.hydra
        for path in (Path(hc.runtime.output_dir) / (hc.output_subdir or ".hydra")).glob("*.yaml"):
            redact_file(path)
        if OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN:
            redact_file(Path(hc.sweep.dir) / "multirun.yaml")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = sweep_overrides(config)
        trials = OmegaConf.select(config, "hydra.sweeper.n_trials")  # an optimising sweeper
        info: dict[str, Any] = {"started": time.time(), "overrides": overrides,
                                "total_jobs": trials or count_jobs(overrides),
                                "parent_run_id": None}
        tracking = _tracking(config)
        before = read_sweep_file(sweep_dir)
        why = foreign_sweep(before["overrides"], overrides) if before.get("overrides") else None
        if why and not OmegaConf.select(config, "reuse_dir"):
            # a callback's exceptions only become warnings in Hydra: end the multirun here
            print(f"error: hydra.sweep.dir={sweep_dir} holds a different sweep ({why}); its "
                  "results would be mixed with this one's and its parent run reused. Use a new "
                  "folder, or add reuse_dir=true to run into it anyway (a new parent run; job "
                  "folders of other configs are overwritten).", file=sys.stderr, flush=True)
            raise SystemExit(2)
        if why:
            before = {}  # reuse_dir=true: this sweep gets a parent run of its own
        if tracking.enabled:
            try:
                reason = unreachable(resolve_uri(configured=tracking.uri))
                if reason:
                    raise ConnectionError(reason)
                tracker = create_tracker(tracking)
                # a re-run of the same sweep (resume) reopens the parent run it recorded
                recorded = {k: before.get(k) for k in ("parent_run_id", "tracking_uri")}
                info["parent_run_id"] = tracker.open_sweep(sweep_dir, {**info, **recorded})
                info["tracking_uri"] = tracker.uri
            except Exception as e:  # results still land in the job folders; jobs do not retry
                info["tracking_offline"] = f"{type(e).__name__}: {e}"
                log.warning("MLflow not reachable (%s): the sweep goes on without it and its "
                            "results wait in %s for python -m sweep.report %s --log-to-mlflow",
                            e, sweep_dir, sweep_dir)
        write_sweep_file(sweep_dir, info)
        if info["parent_run_id"]:
            state.open_parent = (tracking, info["parent_run_id"])
        print(f"sweep: {info['total_jobs']} jobs -> {sweep_dir}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
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
        failed = sum(r["status"] != "ok" for r in rows) + state.unsaved_jobs
        total = len(rows) + state.unsaved_jobs
        state.failed_jobs += failed if reported else max(failed, 1)
        info = read_sweep_file(sweep_dir)
        state.open_parent = None
        if info.get("parent_run_id"):
            try:
                tracker = create_tracker(_tracking(config))
                tracker.log_report(info["parent_run_id"], sweep_dir)
                tracker.finish_sweep(info["parent_run_id"],
                                     {"jobs_ok": total - failed, "jobs_failed": failed,
                                      "wall_s": time.time() - info["started"]},
                                     failed > 0 or not reported)
            except Exception as e:
                log.warning("MLflow parent run not finished (%s)", e)
        print(f"sweep done: {total} jobs, {failed} failed; "
              f"summary in {sweep_dir / REPORT_FILES[2]}", flush=True)
        if info.get("parent_run_id"):
            try:
                print(f"MLflow: {_ui_link(create_tracker(_tracking(config)))}", flush=True)
            except Exception as e:  # the store went away: the results are in the folders
                log.warning("MLflow link not printed (%s)", e)


def _ui_link(tracker) -> str:
    """The runs table's address (a server's) or how to open it (a local store's)."""
    path, uri = tracker.ui_path() or "", redact(tracker.uri)
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{path}"
    return f"mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000/{path}"
