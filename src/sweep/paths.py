"""Where the configuration and the artifact cache live."""

from __future__ import annotations

import os
from pathlib import Path


def conf_dir() -> Path:
    """The `conf/` folder: inside the installed wheel, else at the top of the repository."""
    packaged = Path(__file__).parent / "conf"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"


def cache_dir(configured: str | None = None) -> Path:
    """Artifact cache: `cache_dir` from the config, else $SWEEP_CACHE_DIR, else ~/.cache/sweep."""
    path = configured or os.environ.get("SWEEP_CACHE_DIR") or Path.home() / ".cache" / "sweep"
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
