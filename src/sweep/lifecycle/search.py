"""An optimising sweeper's side of a sweep (`hydra/sweeper=optuna`): why a trial is told to the
study as failed, and what a search that stopped before its `n_trials` says.

A job's objective (`one_job.objective`) is NaN when it failed, its outputs are wrong, it was
overloaded or no rate met its SLO; the sweeper (`hydra_plugins.inference_sweep.optuna_search`)
tells such a trial to the study as failed, with the reason read here from its result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweep.lifecycle.outcome import Outcome
from sweep.redact import redact
from sweep.result import load_result


class TrialFailed(Exception):
    """A trial the study is told failed: its job's reason."""


def why_failed(job_dir: Path | None) -> str:
    """One line on why the job in `job_dir` has no objective value (NaN), from its result."""
    saved = load_result(job_dir) if job_dir else None
    if saved is None:
        return "no result was saved"
    info, metrics = saved.get("info", {}), saved.get("metrics", {})
    name = saved.get("job") or job_dir.name
    if saved.get("status") != "ok":
        why = f"failed: {saved.get('error')}"
    elif metrics.get("correct") == 0:
        why = f"outputs wrong: {info.get('correctness', '')}"
    else:
        why = info.get("slo_result") or info.get("overloaded") or "no objective value"
    return redact(f"{name}: {why}")


def stopped_reason(error: BaseException, completed: int, failed: int,
                   max_failure_rate: Any) -> str:
    """What a search that raised says: the failure rate exceeded, no trial completed (no best
    value), or the error itself, with what to type."""
    if isinstance(error, TrialFailed):
        return (f"the search stopped: {failed} trial(s) failed, more than "
                f"hydra.sweeper.max_failure_rate="
                f"{max_failure_rate} allows (last: {error}); to go on past failed trials, "
                "add hydra.sweeper.max_failure_rate=1.0")
    if completed == 0 and failed:
        return (f"the search found nothing: all {failed} trial(s) failed, so there is no best "
                "configuration "
                "(optimization_results.yaml not written); the report says why each failed")
    return redact(f"the search stopped: {type(error).__name__}: {error}")


def stop_search(outcome: Outcome, reason: str) -> None:
    """Note that the search stopped before its end: the multirun's close reports it, counts it
    as a failure (exit 1) and finishes the parent run FAILED."""
    outcome.search_stopped = reason
