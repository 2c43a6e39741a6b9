"""What a person watching a sweep sees while it works: the phase a job is in (building,
exporting, compiling, calibrating, checking, timing) with its elapsed time, and the sweep bar of
the per-job line (done / failed / remaining, ETA from the jobs so far).

Everything goes through the `sweep.progress` logger, so Hydra's job log (`app.log`) holds what
the console showed. On a terminal the running phase is also a rich spinner with a live clock on
stderr that disappears when the phase ends; elsewhere (logs, CI, an isolated worker) a long
phase writes a plain "still compiling" line every `HEARTBEAT_S` seconds instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator

log = logging.getLogger("sweep.progress")

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
    log.info("%s: %s ...", job, name)
    t0 = time.perf_counter()
    with _spinner(f"{job}: {name}") if live() else _heartbeat(job, name, t0, heartbeat_s):
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

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True, redirect_stdout=False,
                   redirect_stderr=False)
    with bar:
        bar.add_task(text, total=None)
        yield


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
