"""The sweeper of inference-sweep (Hydra finds sweepers only under `hydra_plugins`): Hydra's
basic grid, and with `bench.rounds=N` > 1 the grid N times, each round in a new shuffled job
order, so that the machine's drift between jobs falls on every configuration alike.

In rounds the jobs are launched one at a time, each with its grid number, so a job keeps its
folder across rounds and the launcher's parallelism cannot mix two measurements. Every job's
config of the grid is checked before this sweeper starts (`sweep.refusals.refused_jobs`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from sweep.result import SweepRecord


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
        rounds = int(OmegaConf.select(self.config, "bench.rounds", default=1) or 1)
        if rounds <= 1:
            return super().sweep(arguments)
        assert self.hydra_context is not None and self.launcher is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        grid = [list(job) for job in self.split_arguments(overrides, None)[0]]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.validate_batch_is_legal(grid)
        plan = round_plan(len(grid), rounds)
        record = SweepRecord.read(sweep_dir)
        record.rounds, record.round_plan = rounds, plan
        record.write(sweep_dir)
        returns = []
        for number, order in enumerate(plan, start=1):
            for job in order:
                results = self.launcher.launch([[*grid[job], f"bench.round={number}"]],
                                               initial_job_idx=job)
                for r in results:
                    _ = r.return_value  # re-raise what Hydra itself could not run
                returns.append(results)
        return returns
