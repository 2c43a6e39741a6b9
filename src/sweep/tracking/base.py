"""The one interface every tracking store implements: a parent run per sweep, a child run per
job, the report on the parent, and the sweep read back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from sweep.sources import Sweep


class Tracker(ABC):
    """A tracking store bound to one URI and one experiment."""

    uri: str

    def ui_path(self) -> str | None:
        """Where the store's web UI shows this experiment's runs table, after its base URL."""
        return None

    @abstractmethod
    def open_sweep(self, sweep_dir: Path, info: dict[str, Any]) -> str:
        """The parent run of the sweep in `sweep_dir`: the one `info` (its sweep file) records,
        reopened, when this store holds it (a resumed sweep); else a new one."""

    @abstractmethod
    def finish_sweep(self, parent_id: str, metrics: dict[str, float], failed: bool) -> None:
        """Log the sweep's own metrics and close its parent run."""

    @abstractmethod
    def kill_sweep(self, parent_id: str) -> None:
        """Close the parent run of a sweep that a signal ended (SIGINT, SIGTERM)."""

    @abstractmethod
    def log_report(self, parent_id: str, out_dir: Path) -> None:
        """Attach the report files and plots in `out_dir` to the parent run."""

    @abstractmethod
    def has_job(self, uid: str) -> bool:
        """Whether the job `uid` is logged already."""

    @abstractmethod
    def log_job(self, result: dict[str, Any], job_dir: Path, parent_id: str | None) -> str:
        """One child run for the job (once per uid); returns its run id."""

    @abstractmethod
    def load_sweep(self, parent_id: str | None = None, with_samples: bool = True) -> Sweep:
        """The jobs of the sweep `parent_id` (default: the experiment's latest) as a Sweep."""
