"""`hydra/sweeper=optuna` of inference-sweep: hydra-optuna-sweeper's search, with a bad trial
told to the study as failed and a search that stops still closed by the multirun's end.

The plugin tells a trial's NaN objective to Optuna as a value, which Optuna refuses, and then
fails to record the trial at all (two tracebacks, the sweep left open). Here a NaN trial reaches
it as a failed job (`TrialFailed`, its reason from the job's result), which it records as a
FAIL and counts against `max_failure_rate`; when the search raises (that rate exceeded, no trial
completed, anything else), the error becomes the outcome's `search_stopped` and the sweep ends
normally: Hydra's multirun end writes the report and finishes the parent run FAILED, exit 1.
Stored in place of the plugin's own `hydra/sweeper/optuna` config, with the same keys.
"""

# no `from __future__ import annotations`: Hydra's plugin scan loads this module outside
# sys.modules, where a dataclass cannot resolve string annotations
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from sweep.lifecycle.outcome import OUTCOME
from sweep.lifecycle.search import TrialFailed, stop_search, stopped_reason, why_failed

try:
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # the [search] extra is not installed: hydra/sweeper=optuna is not offered
    OptunaSweeper = None


class _FailedTrial(JobReturn):
    """A job whose objective is NaN, as the plugin records a failed job (its value raises), without
    Hydra's 'Error executing job' line: the warning below says which and why."""

    @property
    def return_value(self) -> Any:
        raise self._return_value

    @return_value.setter
    def return_value(self, value: Any) -> None:
        self._return_value = value


class _TrialLauncher:
    """The sweeper's launcher, with every NaN objective turned into a failed job; counts the
    trials that completed and failed for the stopped search's message."""

    def __init__(self, launcher: Any) -> None:
        self.launcher = launcher
        self.completed = self.failed = 0

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        returns = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        return [self._told(ret) for ret in returns]

    def _told(self, ret: JobReturn) -> JobReturn:
        value = ret._return_value
        if ret.status != JobStatus.COMPLETED:
            self.failed += 1
            return ret
        if not (isinstance(value, float) and math.isnan(value)):
            self.completed += 1
            return ret
        self.failed += 1
        out_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg \
            else None
        why = why_failed(Path(out_dir) if out_dir else None)  # the plugin warns with it
        return _FailedTrial(overrides=ret.overrides, cfg=ret.cfg, hydra_cfg=ret.hydra_cfg,
                            working_dir=ret.working_dir, task_name=ret.task_name,
                            status=JobStatus.FAILED, _return_value=TrialFailed(why))


if OptunaSweeper is not None:

    class OptunaSearch(OptunaSweeper):
        """Optuna's sweeper with bad trials recorded as failed and a stopped search closed."""

        def setup(self, **kwargs: Any) -> None:
            super().setup(**kwargs)
            self.trials = _TrialLauncher(self.sweeper.launcher)
            self.sweeper.launcher = self.trials

        def sweep(self, arguments: list[str]) -> None:
            try:
                self.sweeper.sweep(arguments)
            except Exception as e:  # the multirun's end still writes the report, parent FAILED
                reason = stopped_reason(e, self.trials.completed, self.trials.failed,
                                        self.sweeper.max_failure_rate)
                stop_search(OUTCOME, reason)

    @dataclass
    class OptunaSearchConf(OptunaSweeperConf):
        _target_: str = "hydra_plugins.inference_sweep.optuna_search.OptunaSearch"

    class OptunaSearchConfig(SearchPathPlugin):
        """Stores OptunaSearchConf as `hydra/sweeper/optuna`, replacing the plugin's entry. Hydra's
        plugin scan re-runs every plugin module (the plugin's config module stores its entry
        again, in an order set by sys.path); search paths are set after that scan, so here."""

        def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
            ConfigStore.instance().store(group="hydra/sweeper", name="optuna",
                                         node=OptunaSearchConf, provider="inference_sweep")
