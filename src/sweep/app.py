"""Hydra's entry point, a thin door into sweep.lifecycle: compose, run one job
(`lifecycle.one_job.run_job`) and return its objective; `main` refuses a bad command line first
and turns the outcome (or a signal) into the exit status. The resolvers Hydra's config uses are
registered here, before Hydra composes anything.

    python -m sweep                                     # one job, the embedded default
    python -m sweep -m runtime=torch,onnx batch=1,8,32  # a multirun sweep
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweep.config import register_configs
from sweep.lifecycle.multirun import raise_on_sigterm, run_to_exit_status
from sweep.lifecycle.one_job import objective, run_job, swept_params, typed_config
from sweep.lifecycle.outcome import OUTCOME
from sweep.paths import conf_dir
from sweep.redact import install_log_filter
from sweep.refusals import check_command_line
from sweep.result import flatten, job_name

register_configs()
install_log_filter()  # before Hydra logs anything: its echo of the overrides is masked too
# hydra/launcher=local_gpus runs as many jobs at once as `gpus` lists
OmegaConf.register_new_resolver("sweep_count", lambda v: len(v) if v else 1, replace=True)


def _job_name(*, _root_: DictConfig) -> str:
    """`${sweep_job_name:}`: the job folder's name by the rule of run names (result.job_name),
    at the resolution the job will run at."""
    data = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in _root_.items() if k != "hydra"}
    with contextlib.suppress(Exception):  # a config the job refuses: it says why, not here
        typed_config(data)
    return job_name(flatten(data), swept_params(Path(_root_.hydra.sweep.dir)))


OmegaConf.register_new_resolver("sweep_job_name", _job_name, replace=True)


def help_groups() -> str:
    """`${sweep_groups:}` in --help: the config groups a user picks from, as sweep/conf/ holds them
    (the schema/* groups are internal), and the launchers of hydra/launcher."""
    root = conf_dir()
    groups = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "hydra")
    groups.append(root / "hydra" / "launcher")
    lines = []
    for group in groups:
        options = sorted(p.stem for p in group.glob("*.yaml"))
        if group.name == "launcher":  # Hydra's own and its plugins' (installed with sweep)
            options = ["basic", "joblib", "submitit_local", *options]
        name = group.relative_to(root).as_posix()
        lines.append(f"  {name + ':':<17}{', '.join(options)}")
    lines.append(f"  {'hydra/sweeper:':<17}basic, optuna (pip install 'inference-sweep[search]')")
    return "\n".join(lines)


OmegaConf.register_new_resolver("sweep_groups", help_groups, replace=True)


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)
def task(dcfg: DictConfig) -> float:
    """One job. Returns its objective, for optimising sweepers (Optuna)."""
    hc = HydraConfig.get()
    sweep_dir = Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    result = run_job(OmegaConf.to_container(dcfg, resolve=True), hc.job.get("num"),
                     Path(hc.runtime.output_dir), sweep_dir, OUTCOME)
    return objective(result)


def main() -> None:
    """`python -m sweep`: exit status 1 when any job failed, 2 when a value was refused before
    anything started, 128 + the signal's number when a signal ended it."""
    raise_on_sigterm()
    check_command_line(sys.argv[1:])  # exit 2 on a bad value Hydra would meet first
    sys.exit(run_to_exit_status(task, OUTCOME))
