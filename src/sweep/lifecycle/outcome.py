"""What one `python -m sweep` process ends with: its failed and unsaved jobs, and the parent run
still open (closed as KILLED when a signal ends the process). Hydra calls the job function and
the callbacks separately, so the process keeps one `OUTCOME` that both are handed."""

from __future__ import annotations

from dataclasses import dataclass

from sweep.config import TrackingConfig


@dataclass
class Outcome:
    failed_jobs: int = 0
    # jobs whose result.json could not be written (disk full): a multirun's end counts them as
    # failed, since the folder it reports from does not hold them
    unsaved_jobs: int = 0
    # the multirun's tracking config and parent run id while it runs, so a signal can close it
    open_parent: tuple[TrackingConfig, str] | None = None
    # why an optimising sweeper's search stopped before its end (sweep.lifecycle.search)
    search_stopped: str = ""

    def job_ended(self, ok: bool, saved: bool, in_multirun: bool) -> None:
        """Count one finished job: a lone job's failure here, a multirun's at its end (from the
        folder, which then also counts the unsaved ones)."""
        self.unsaved_jobs += 0 if saved else 1
        self.failed_jobs += 1 if not ok and not in_multirun else 0

    def sweep_ended(self, failed: int, reported: bool) -> None:
        """A multirun's failed jobs; a sweep whose report could not be written counts as one
        failure at least (its jobs may all be fine, but the user has no summary)."""
        self.failed_jobs += failed if reported else max(failed, 1)
        self.open_parent = None

    def exit_status(self) -> int:
        """`python -m sweep`'s exit status when no signal ended it: 1 when any job failed."""
        return 1 if self.failed_jobs else 0


OUTCOME = Outcome()
