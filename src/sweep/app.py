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
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweep import state
from sweep.config import (
    SweepConfig,
    TrackingConfig,
    from_container,
    job_values,
    register_configs,
    tracking_of,
)
from sweep.paths import conf_dir
from sweep.progress import log as progress_log
from sweep.progress import sweep_bar
from sweep.redact import install_log_filter, redact
from sweep.result import (
    RESULT_FILE,
    JobResult,
    config_digest,
    failed_result,
    flatten,
    job_name,
    load_result,
    read_sweep_file,
    save_result,
    swept_keys,
    try_write_config,
    write_sweep_file,
)
from sweep.tracking import create_tracker

log = logging.getLogger("sweep")

register_configs()
install_log_filter()  # before Hydra logs anything: its echo of the overrides is masked too
# hydra/launcher=local_gpus runs as many jobs at once as `gpus` lists
OmegaConf.register_new_resolver("sweep_count", lambda v: len(v) if v else 1, replace=True)


def _swept(sweep_dir: Path | None) -> tuple[str, ...]:
    """The params the multirun in `sweep_dir` varies, from its sweep file (none for one job)."""
    return tuple(swept_keys(read_sweep_file(sweep_dir).get("overrides") or [])) if sweep_dir else ()


def _typed(data: dict[str, Any]) -> tuple[SweepConfig, str]:
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


def _job_name(*, _root_: DictConfig) -> str:
    """`${sweep_job_name:}`: the job folder's name by the rule of run names (result.job_name),
    at the resolution the job will run at."""
    data = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in _root_.items() if k != "hydra"}
    with contextlib.suppress(Exception):  # a config the job refuses: it says why, not here
        _typed(data)
    return job_name(flatten(data), _swept(Path(_root_.hydra.sweep.dir)))


OmegaConf.register_new_resolver("sweep_job_name", _job_name, replace=True)


def help_groups() -> str:
    """`${sweep_groups:}` in --help: the config groups a user picks from, as sweep/conf/ holds them
    (the schema/* groups are internal), and the launchers of hydra/launcher."""
    root = conf_dir()
    groups = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "hydra")
    groups.append(root / "hydra" / "launcher")
    lines = []
    for group in groups:
        options = sorted(p.stem for p in group.glob("*.yaml"))
        if group.name == "launcher":  # Hydra's own and its plugins' (installed with sweep)
            options = ["basic", "joblib", "submitit_local", *options]
        name = group.relative_to(root).as_posix()
        lines.append(f"  {name + ':':<17}{', '.join(options)}")
    lines.append(f"  {'hydra/sweeper:':<17}basic, optuna (pip install 'inference-sweep[search]')")
    return "\n".join(lines)


OmegaConf.register_new_resolver("sweep_groups", help_groups, replace=True)


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
    if notes := result.info.get("stability"):
        what += "  THROTTLED" if result.info.get("throttle") else "  UNSTEADY"
        what += f" ({len(notes)} note(s) in the report)"
    if sweep_dir is None:
        return f"{result.job}: {what}"
    if planned := result.info.get("rounds_planned"):  # in rounds: which round, of how many
        done = len(result.info.get("rounds_done", []))
        return f"[round {result.params.get('bench.round')}/{planned}] {result.job}: {what}  " \
               f"({done} round(s) of this job done)"
    info = read_sweep_file(sweep_dir)
    total, started = info.get("total_jobs"), info.get("started", 0)
    finished = [load_result(p.parent) for p in sweep_dir.glob(f"*/{RESULT_FILE}")
                if p.stat().st_mtime >= started]
    done = sum(r is not None for r in finished)
    failed = sum(r is not None and r["status"] != "ok" for r in finished)
    bar = sweep_bar(done, failed, total, time.time() - started)
    return f"[{done}/{total or '?'}] {result.job}: {what}  {bar}"


def _finished_before(job_dir: Path, digest: str) -> JobResult | None:
    """The job folder's complete result for this very config, if there is one."""
    saved = load_result(job_dir)
    if saved is None or saved.get("info", {}).get("config_digest") != digest:
        return None
    return JobResult(**saved)


def _run(cfg: SweepConfig, job_dir: Path, swept: tuple[str, ...]) -> JobResult:
    if cfg.isolation == "process":
        from sweep.isolation import run_isolated

        return run_isolated(cfg, job_dir)
    from sweep.job import run_job

    return run_job(cfg, job_dir, swept)


def _measure(cfg: SweepConfig | None, data: dict[str, Any], refused: str, job_dir: Path,
             swept: tuple[str, ...], resolution_from: str = "") -> JobResult:
    """Write the job's config and run it (or record why it could not run), named as its
    folder."""
    unwritable = try_write_config(job_dir, data)
    if cfg and unwritable and cfg.isolation == "process":  # the worker reads config.yaml
        result = failed_result(flatten(cfg), unwritable)
    elif cfg:
        result = _run(cfg, job_dir, swept)
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


def _run_round(cfg: SweepConfig, job_dir: Path, data: dict[str, Any], digest: str,
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
    latest = _measure(cfg, data, "", job_dir, swept, resolution_from)
    latest.info["config_digest"] = digest
    records = rounds.record(job_dir, number, digest, latest)
    result = rounds.combine(latest, records, cfg.bench.rounds)
    if saved is not None:  # one job, one uid over its rounds: logged to MLflow once
        result.uid = saved["uid"]
    save_result(result, job_dir)
    return result, False


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)
def task(dcfg: DictConfig) -> float:
    """One job. Returns its objective, for optimising sweepers (Optuna)."""
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    sweep_dir = Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    job_dir.mkdir(parents=True, exist_ok=True)
    data = job_values(OmegaConf.to_container(dcfg, resolve=True), hc.job.get("num"))
    cfg: SweepConfig | None = None
    refused = resolution_from = ""
    try:
        cfg, resolution_from = _typed(data)
    except Exception as e:
        # a bad value that could not be checked before the sweep began (an optuna trial's are
        # drawn as it starts; sweep.callbacks checks a grid's): a failed job, the sweep goes on
        refused = f"{type(e).__name__}: {e}"
    digest = config_digest(_without_round(data))  # every round of a job measures one config
    tracking = cfg.tracking if cfg else tracking_of(data)
    in_rounds = cfg is not None and cfg.bench.round > 0
    if in_rounds:
        result, skipped = _run_round(cfg, job_dir, data, digest, _swept(sweep_dir),
                                     resolution_from)
    else:
        result = None if cfg and cfg.force else _finished_before(job_dir, digest)
        if result and result.status != "ok" and data.get("resume") == "retry_failed":
            result = None
        skipped = result is not None
        if skipped:
            os.utime(job_dir / RESULT_FILE)  # counted as done in this run's progress
        else:
            result = _measure(cfg, data, refused, job_dir, _swept(sweep_dir),
                              resolution_from)
            result.info["config_digest"] = digest
    # a skipped job is looked up again (by its uid): a store that was deleted or emptied since
    # gets it back, under this sweep's parent run. In rounds, a job is logged once, with all
    # its rounds, after the last one.
    last_round = not in_rounds or len(result.info.get("rounds_done", [])) + len(
        result.info.get("rounds_failed", {})) >= cfg.bench.rounds
    logged_as = result.info.get("mlflow_run_id")
    logging_now = tracking.enabled and last_round
    if logging_now:
        sweep_info = read_sweep_file(sweep_dir) if sweep_dir else {}
        if sweep_info.get("tracking_offline"):  # said once, when the multirun started
            result.info["mlflow_error"] = f"not tried: {sweep_info['tracking_offline']}"
        else:
            _log_job(result, job_dir, tracking, sweep_info.get("parent_run_id"), sweep_dir)
            if logged_as and result.info.get("mlflow_run_id") not in (None, logged_as):
                progress_log.info(f"{result.job}: logged to MLflow again (the store no longer "
                                  f"held run {logged_as})")
    # the digest and the MLflow run id join the saved result
    if (logging_now or not skipped) and not save_result(result, job_dir):
        state.unsaved_jobs += 1
    progress_log.info(redact(_progress(result, sweep_dir, skipped)))  # console and app.log
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
    from sweep.callbacks import check_command_line  # what Hydra loads for a multirun anyway

    check_command_line(sys.argv[1:])  # exit 2 on a bad value Hydra would meet first
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
