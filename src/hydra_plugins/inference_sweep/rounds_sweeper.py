"""The sweeper of inference-sweep (Hydra finds sweepers only under `hydra_plugins`): Hydra's
basic grid, and with `bench.rounds=N` > 1 the grid N times, each round in a new shuffled job
order, so that the machine's drift between jobs falls on every configuration alike.

In rounds the jobs are launched one at a time, each with its grid number, so a job keeps its
folder across rounds and the launcher's parallelism cannot mix two measurements. Every job's
config of the grid is checked before this sweeper starts (`sweep.refusals.refused_jobs`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from sweep.lifecycle.outcome import OUTCOME
from sweep.result import SWEEP_FILE, SweepRecord

log = logging.getLogger("sweep")


def round_plan(jobs: int, rounds: int, seed: int = 0) -> list[list[int]]:
    """Per round, the order in which the grid's jobs are visited: a new shuffle each round."""
    rng = random.Random(seed)
    plan = []
    for _ in range(rounds):
        order = list(range(jobs))
        rng.shuffle(order)
        plan.append(order)
    return plan


class RoundsSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None = None,
                 params: dict[str, str] | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)

    def sweep(self, arguments: list[str]) -> Any:
        assert self.hydra_context is not None and self.launcher is not None
        rounds = int(OmegaConf.select(self.config, "bench.rounds", default=1) or 1)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        _written_or_said(lambda: OmegaConf.save(self.config, sweep_dir / "multirun.yaml"),
                         sweep_dir / "multirun.yaml")
        if rounds <= 1:  # Hydra's basic grid, in its batches
            returns = []
            index = 0
            for batch in self.split_arguments(overrides, self.max_batch_size):
                self.validate_batch_is_legal(batch)
                returns.append(self._launch(batch, index))
                index += len(batch)
            return returns
        grid = [list(job) for job in self.split_arguments(overrides, None)[0]]
        self.validate_batch_is_legal(grid)
        plan = round_plan(len(grid), rounds)
        record = SweepRecord.read(sweep_dir)
        record.rounds, record.round_plan = rounds, plan
        _written_or_said(lambda: record.write(sweep_dir), sweep_dir / SWEEP_FILE)
        returns = []
        for number, order in enumerate(plan, start=1):
            for job in order:
                returns.append(self._launch([[*grid[job], f"bench.round={number}"]], job))
        return returns

    def _launch(self, batch: list[list[str]], index: int) -> list:
        """Launch `batch` (its first job numbered `index`). Hydra writes each job's `.hydra/`
        files before the job runs, and a write that fails (a full disk) would end the whole
        multirun with its parent run left open: the jobs are then launched one by one (those
        that finished are skipped as finished before), and one that Hydra cannot start is a
        failed job of the sweep, which goes on to its report and closes its parent run."""
        try:
            results = self.launcher.launch(batch, initial_job_idx=index)
        except OSError as e:
            if len(batch) > 1:
                return [r for i, job in enumerate(batch) for r in self._launch([job], index + i)]
            log.error("job %d (%s) not run: Hydra could not write its files (%s); the sweep "
                      "goes on and counts it failed", index, " ".join(batch[0]), e)
            OUTCOME.unsaved_jobs += 1
            return []
        for r in results:
            _ = r.return_value  # re-raise what Hydra itself could not run
        return list(results)


def _written_or_said(write: Callable[[], None], path: Path) -> None:
    """A sweep-level file that the folder cannot take (a full disk) is logged, and the sweep
    goes on: its jobs and report say the rest."""
    try:
        write()
    except OSError as e:
        log.error("could not write %s: %s", path, e)
