"""What a person watching a sweep sees while it works: the phase a job is in (building,
exporting, compiling, calibrating, checking, timing) with its elapsed time, what a finished job
measured (offline or serving figures, or why it has none), and the sweep bar of the per-job line
(done / failed / remaining, ETA from the jobs so far).

Everything goes through the `sweep.progress` logger, so Hydra's job log (`app.log`) holds what
the console showed. On a terminal the running phase is a rich spinner with a live clock on
stderr that disappears when the phase ends (its start line then goes to app.log only, and other
output is printed above the spinner, not into it); elsewhere (logs, CI, an isolated worker) a
long phase writes a plain "still compiling" line every `HEARTBEAT_S` seconds instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("sweep.progress")

ON_SPINNER = "on_spinner"  # a record's attribute: the live spinner shows it, the console not

HEARTBEAT_S = 15.0  # plain-line mode: how often a long phase says it is still running
BAR_WIDTH = 20


def live() -> bool:
    """Whether to draw in place: stderr is a terminal and SWEEP_PROGRESS is not `plain`."""
    mode = os.environ.get("SWEEP_PROGRESS", "auto")
    return mode == "live" or (mode == "auto" and sys.stderr.isatty())


def _secs(s: float) -> str:
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)}m{int(s % 60):02d}s"


@contextlib.contextmanager
def phase(job: str, name: str, heartbeat_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Report `job` in phase `name` for the duration of the block; logs its start and how long
    it took (or that it failed)."""
    drawn = live()
    log.info("%s: %s ...", job, name, extra={ON_SPINNER: drawn})
    t0 = time.perf_counter()
    with _spinner(f"{job}: {name}") if drawn else _heartbeat(job, name, t0, heartbeat_s):
        try:
            yield
        except BaseException:
            log.info("%s: %s stopped after %s", job, name, _secs(time.perf_counter() - t0))
            raise
    log.info("%s: %s done in %s", job, name, _secs(time.perf_counter() - t0))


@contextlib.contextmanager
def _spinner(text: str) -> Iterator[None]:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    # what is written meanwhile (warnings, log lines) is printed above the spinner, not into it
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True, redirect_stdout=True,
                   redirect_stderr=True)
    with bar, _log_streams_to(sys.stdout, sys.stderr):
        bar.add_task(text, total=None)
        yield


@contextlib.contextmanager
def _log_streams_to(*proxies: Any) -> Iterator[None]:
    """Point the root logger's console handlers at the spinner's proxies of stdout and stderr:
    they hold the streams they were configured with, which the spinner's redirect cannot see."""
    moved = []
    for handler in logging.getLogger().handlers:
        if type(handler) is not logging.StreamHandler:  # a FileHandler writes app.log
            continue
        proxy = next((p for p in proxies
                      if getattr(p, "rich_proxied_file", None) is handler.stream), None)
        if proxy is not None:
            moved.append((handler, handler.setStream(proxy)))
    try:
        yield
    finally:
        for handler, stream in moved:
            handler.setStream(stream)


@contextlib.contextmanager
def _heartbeat(job: str, name: str, t0: float, every: float) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            log.info("%s: still %s, %s", job, name, _secs(time.perf_counter() - t0))

    thread = threading.Thread(target=beat, daemon=True, name="sweep-progress")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def measured(metrics: dict[str, Any], info: dict[str, Any]) -> str:
    """What a finished job measured, for its progress line: a serving job's served rate and
    latency (`max_qps_at_slo` with its SLO), OVERLOADED or SLO NOT MET with the reason, or an
    offline job's ms/img and fps."""
    if reason := info.get("overloaded"):
        return f"OVERLOADED {reason.removeprefix('overloaded ')}"
    if reason := info.get("slo_result"):
        return f"SLO NOT MET: {reason}"
    latency = "".join(f"  p{q} {metrics[f'latency_ms_p{q}']:.3f} ms" for q in (50, 99)
                      if f"latency_ms_p{q}" in metrics)
    if "max_qps_at_slo" in metrics:
        slo = info.get("slo", "its SLO")
        return f"ok  max_qps_at_slo {metrics['max_qps_at_slo']:,.1f} qps under {slo}{latency}"
    if "server_qps" in metrics:
        return f"ok  served {metrics['server_qps']:,.1f} qps{latency}"
    if "infer_ms_per_img" in metrics:
        return f"ok  {metrics['infer_ms_per_img']:.3f} ms/img  {metrics['fps']:,.1f} fps"
    return f"ok  {metrics['fps']:,.1f} fps" if "fps" in metrics else "ok"


def sweep_bar(done: int, failed: int, total: int | None, elapsed_s: float) -> str:
    """`[#######.............] 1 failed, 5 remaining, ETA 1m20s`: the ETA is the sweep's rate so
    far (jobs finished per second of wall time, which also holds for launchers that run several
    jobs at once) applied to the jobs left."""
    if not total:
        return f"{failed} failed, ? remaining"
    left = max(total - done, 0)
    filled = min(BAR_WIDTH, round(BAR_WIDTH * done / total))
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    eta = f", ETA {_secs(elapsed_s / done * left)}" if done and left else ""
    return f"[{bar}] {failed} failed, {left} remaining{eta}"


class ConsoleFormatter(logging.Formatter):
    """The console's look (sweep/conf/hydra/job_logging/sweep.yaml): progress as bare lines,
    anything else with its logger and level as Hydra prints it."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.name == log.name and record.levelno == logging.INFO:
            return record.getMessage()
        return super().format(record)


class NotOnSpinner(logging.Filter):
    """The console handler's filter (sweep/conf/hydra/job_logging/sweep.yaml): a phase's start
    line that the live spinner shows is written to app.log only, not twice on the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, ON_SPINNER, False)


class RepeatedLaunch(logging.Filter):
    """Drops Hydra's "Launching 1 jobs locally" (hydra._internal.core_plugins.basic_launcher),
    which the rounds sweeper and optuna would print before every job they launch one at a time.
    Put on that logger by the job logging config, so the line before the first job stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Launching ")


_REPEATED_LAUNCH = RepeatedLaunch()


def repeated_launch() -> RepeatedLaunch:
    """The one filter instance (the job logging config is applied at every job, and a logger
    keeps one copy of a filter it already has)."""
    return _REPEATED_LAUNCH
