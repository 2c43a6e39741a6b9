"""Hydra's callback for every run (sweep/conf/hydra/callbacks/sweep.yaml), a thin door: each
method hands over to sweep.refusals (checks before anything starts) or sweep.lifecycle (the
multirun's record, parent run, report and counts).

`on_multirun_*` run on the submitting machine, `on_job_*` where the job runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweep.config import TrackingConfig
from sweep.lifecycle.multirun import close_sweep, open_sweep
from sweep.lifecycle.outcome import OUTCOME
from sweep.redact import redact_file
from sweep.refusals import check_grid, check_job, planned_grid, sweep_overrides


def tracking_config(config: DictConfig) -> TrackingConfig:
    """The composed config's tracking node, typed by its schema."""
    return OmegaConf.to_object(config.tracking)


class SweepCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """One job: its config checked before Hydra makes its folder."""
        check_job(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra has configured this job's log handlers and written its `.hydra/` files (and
        the sweeper its multirun.yaml): mask their secrets before anything reads them."""
        hc = config.hydra
        for path in (Path(hc.runtime.output_dir) / (hc.output_subdir or ".hydra")).glob("*.yaml"):
            redact_file(path)
        if OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN:
            redact_file(Path(hc.sweep.dir) / "multirun.yaml")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Every job of a grid checked, then the sweep folder, its record and parent run."""
        overrides = sweep_overrides(config)
        grid = planned_grid(config, overrides)
        check_grid(config, grid)
        trials = OmegaConf.select(config, "hydra.sweeper.n_trials")  # an optimising sweeper
        open_sweep(Path(config.hydra.sweep.dir), overrides,
                   trials or (len(grid) if grid else None), tracking_config(config),
                   bool(OmegaConf.select(config, "reuse_dir")), OUTCOME)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        close_sweep(Path(config.hydra.sweep.dir), tracking_config(config), OUTCOME)
