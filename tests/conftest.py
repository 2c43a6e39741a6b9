"""Shared helpers: run the real CLI in a subprocess, in a scratch folder, with a scratch cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Small and quick: what every subprocess job in the tests adds to its overrides.
QUICK = ["resolution=32", "bench.warmup=1", "bench.min_iters=3", "bench.min_seconds=0.05",
         "check.samples=4"]


@pytest.fixture
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def run_cli(args: list[str], cwd: Path, cache: Path, env: dict[str, str] | None = None,
            module: str = "sweep", timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(SWEEP_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def only_sweep_dir(root: Path) -> Path:
    """The one multirun/<date>/<time> folder under `root`."""
    dirs = [p for p in (root / "multirun").glob("*/*") if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]
