"""Hydra callback for multiruns: every job's config checked before any job starts, the
tracking parent run, progress counts and the summary.

`on_multirun_*` run on the submitting machine; jobs (possibly elsewhere) find the parent run id
and the job count in the sweep file (`sweep.result.SWEEP_FILE`).
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import ConfigKeyError

from sweep import state
from sweep.config import CONTROL_KEYS, TrackingConfig, from_container, job_values
from sweep.errors import ConfigError, config_error
from sweep.redact import redact_file, without_credentials
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


def job_grid(overrides: list[str]) -> list[list[str]]:
    """Each job's overrides, in the order (and so with the job numbers) the basic sweeper and
    the rounds sweeper give them."""
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    return BasicSweeper.split_arguments(parser.parse_overrides(overrides), None)[0]


# the sweepers whose jobs are the grid of their overrides, known before any job starts; an
# optimising sweeper (optuna) draws a trial's values as it starts: a bad one fails that trial
GRID_SWEEPERS = ("RoundsSweeper", "BasicSweeper")


def _reason(e: Exception, base: Any = None) -> tuple[str | None, str]:
    """The config key at fault (when one is known) and a one-line reason; `base`, a composed
    config, gives a wrongly typed key's default as what to type."""
    if isinstance(e, ConfigError):
        return e.key, str(e)
    typed = _typed_reason(e, base)
    if typed is not None:
        return typed
    key = getattr(e, "full_key", None) or getattr(e.__cause__, "full_key", None)
    if isinstance(e, ConfigKeyError) and key:
        return key, (f"{key} is not a key of this config: drop it, or check its spelling "
                     "(python -m sweep --cfg job shows every key)")
    text = f"{type(e).__name__}: {e}" + (f" ({e.__cause__})" if e.__cause__ else "")
    return key, " ".join(text.split()).split(" Config search path")[0]


def _refusal(config: DictConfig, job_num: Any) -> tuple[str | None, str] | None:
    """Why a composed job config (with its `hydra` node) cannot run, or None: what the job
    itself would raise building its typed config (the key at fault, the reason)."""
    config = copy.deepcopy(config)
    try:
        with read_write(config), open_dict(config):
            del config["hydra"]  # as Hydra hands it to the job
        from_container(job_values(OmegaConf.to_container(config, resolve=True), job_num))
    except Exception as e:
        return _reason(e)
    return None


def refused_jobs(config: DictConfig, grid: list[list[str]]) -> list[str]:
    """One line per bad value of the grid's jobs: the job numbers, their swept overrides and the
    reason (key, value, what is allowed)."""
    loader = GlobalHydra.instance().config_loader()
    values: dict[str, set[str]] = {}
    for job in grid:
        for override in job:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    swept = {key for key, seen in values.items() if len(seen) > 1}
    by_reason: dict[tuple[str | None, str], list[int]] = {}
    for num, job in enumerate(grid):
        try:
            refusal = _refusal(loader.load_sweep_config(config, list(job)), num)
        except Exception as e:  # Hydra's composition: an unknown choice, a value of a wrong type
            refusal = _reason(e)
        if refusal:
            by_reason.setdefault(refusal, []).append(num)
    lines = []
    for (key, reason), nums in by_reason.items():
        shared = set.intersection(*(set(grid[n]) for n in nums))
        which = [o for o in grid[nums[0]] if o in shared and o.partition("=")[0] in swept]
        # the override that set the key at fault, when it is not a swept one
        which += [o for o in grid[nums[0]] if key and o.partition("=")[0].lstrip("+~") == key
                  and o not in which]
        label = f"job {nums[0]}" if len(nums) == 1 else f"jobs {_numbers(nums)}"
        which_text = f" ({' '.join(redact(o) for o in which)})" if which else ""
        lines.append(f"{label}{which_text}: {redact(reason)}")
    return lines


def _numbers(nums: list[int]) -> str:
    """Job numbers with runs shortened: 0-3, 5, 7."""
    runs: list[list[int]] = []
    for n in nums:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


_TYPE_WORDS = (("to Integer", "must be a whole number"), ("to Float", "must be a number"),
               ("valid bool", "must be true or false"))


def _typed_reason(e: Exception, base: Any) -> tuple[str, str] | None:
    """The key and the tool's one-line reason for what Hydra's composition rejects: a value of
    the wrong type (key, value, what is allowed, the key's default in `base` as what to type)
    or an unknown group choice (the choices there are). None for anything else."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ValidationError

    cause = e.__cause__
    if isinstance(cause, ValidationError) and cause.full_key:
        key, msg = cause.full_key, str(cause.msg)
        allowed = next((w for k, w in _TYPE_WORDS if k in msg), msg.splitlines()[0])
        default = OmegaConf.select(base, key) if base is not None else None
        if isinstance(default, bool):
            default = str(default).lower()
        hint = f"e.g. {key}={default}" if default is not None else ""
        return key, str(config_error(key, cause.value, allowed, hint))
    if isinstance(e, MissingConfigException) and "Available options in '" in str(e):
        text = str(e)
        group, rest = text.split("Available options in '", 1)[1].split("':", 1)
        options = rest.split("Config search path")[0].split()
        value = text.split(f"'{group}/", 1)[1].split("'", 1)[0] if f"'{group}/" in text else "?"
        return group, str(config_error(group, value, f"one of {', '.join(options)}",
                                       f"e.g. {group}={options[0]}" if options else ""))
    return None


CLI_FLAGS = ("-m", "--multirun")  # anything else (--cfg, -cn NAME, --help): Hydra's own way


def check_command_line(args: list[str]) -> None:
    """Compose the command line's plain (unswept) overrides before Hydra does: Hydra composes
    them ahead of any callback, so a value of the wrong type (batch=abc) or an unknown choice
    would end the run with its own message and exit status 1. Refused here like every other
    bad value (exit 2); the swept values are checked per job by the callbacks."""
    if any(a.startswith("-") and a not in CLI_FLAGS for a in args):
        return
    args = [a for a in args if not a.startswith("-")]
    from hydra import compose, initialize_config_dir

    from sweep.config import register_configs
    from sweep.paths import conf_dir

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:  # noqa: BLE001 - a syntax error: Hydra says what is wrong
        return
    plain = [o for o in parsed
             if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    if not plain:
        return
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        try:
            compose("config", overrides=[o.input_line for o in plain])
            return
        except Exception as e:  # noqa: BLE001 - told apart below
            error = e
        key = getattr(error.__cause__, "full_key", None)
        try:  # the same choices without the value at fault: its default, as what to type
            base = compose("config", overrides=[o.input_line for o in plain
                                                if o.key_or_group != key])
        except Exception:  # noqa: BLE001 - no default to show
            base = None
    typed = _typed_reason(error, base)
    if typed is not None:
        _refuse([redact(typed[1])], 1)


def _refuse(lines: list[str], jobs: int) -> None:
    """End the run before anything starts, exit status 2 (a callback's exceptions would only
    become warnings in Hydra)."""
    head = (f"error: {len(lines)} bad value(s) in the config of this sweep's {jobs} jobs; no job "
            "was started:" if jobs > 1 else "error: the config has a bad value; the job was not "
            "started:")
    print("\n  ".join([head, *lines]) + "\nFix the value(s) named and run the same command "
          "again.", file=sys.stderr, flush=True)
    raise SystemExit(2)


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
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """One job: its config checked before Hydra makes its folder."""
        refusal = _refusal(config, None)
        if refusal:
            _refuse([redact(refusal[1])], 1)

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
        overrides = sweep_overrides(config)
        trials = OmegaConf.select(config, "hydra.sweeper.n_trials")  # an optimising sweeper
        try:
            grid = None if trials else job_grid(overrides)
        except Exception:  # a search space (an interval) of another sweeper: not a grid
            grid = None
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_") or "")
        if grid and sweeper.rsplit(".", 1)[-1] in GRID_SWEEPERS:
            # before anything is made (folder, sweep file, parent run): a fixed command re-run
            # into the same folder is then no foreign sweep
            if refused := refused_jobs(config, grid):
                _refuse(refused, len(grid))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        info: dict[str, Any] = {"started": time.time(), "overrides": overrides,
                                "total_jobs": trials or (len(grid) if grid else None),
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
    path, uri = tracker.ui_path() or "", without_credentials(redact(tracker.uri))
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{path}"
    return f"mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000/{path}"
