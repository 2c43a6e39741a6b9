"""One sweep per folder at a time: the submitting process holds an exclusive lock on the sweep
folder's lock file (`sweep.result.SWEEP_LOCK`) for the multirun's life; a second one started
into the same folder is refused (exit 2) with the pid that holds it. The kernel drops the lock
when its holder ends, however it ends, so a killed sweep never leaves the folder locked."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from sweep.result import SWEEP_LOCK

_held: dict[str, int] = {}  # folder -> the open lock file's descriptor, while this process runs


def hold_folder(sweep_dir: Path) -> None:
    """Take `sweep_dir`'s lock for this process, or end it (exit 2) naming who holds it."""
    key = str(Path(sweep_dir).resolve())
    if key in _held:
        return
    path = Path(sweep_dir) / SWEEP_LOCK
    # never truncates before the lock is ours, never follows a planted link
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        print(f"error: hydra.sweep.dir={sweep_dir} is in use by another sweep (pid {holder} "
              f"holds {path}); two sweeps into one folder would measure every job twice. Wait "
              "for it to end (or stop it) and run the command again to resume, or give this "
              "one its own folder (hydra.sweep.dir=...).", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held[key] = fd

