"""Every named suite (sweep/conf/experiment/*.yaml) composes and runs: a real multirun, its swept
keys narrowed to one value that runs on a CPU (flags keep their two), with the tests' quick
overrides."""

from __future__ import annotations

import json

import pytest
from conftest import QUICK, only_sweep_dir, run_cli
from omegaconf import OmegaConf

from sweep.demo_data import generate
from sweep.paths import conf_dir

# pin_memory_ab runs as the README runs it on a CPU, with its accuracy checked, in
# tests/test_pipelines.py::test_pin_memory_suite_runs_on_cpu
RUN_ELSEWHERE = {"pin_memory_ab"}
EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml")
                     if p.stem not in RUN_ELSEWHERE)
# choices that need an NVIDIA GPU (TensorRT, nvJPEG): left out of a CPU run
NEEDS_GPU = {"trt", "trt_int8", "gpu"}
# swept keys whose values are sizes: the smallest that the quick run takes
SMALL = {"resolution": "32", "batch": "1"}


def tiny_params(experiment: str) -> tuple[dict[str, str], int]:
    """The experiment's swept keys, each narrowed to one value that runs here, and the number of
    jobs left. A dotted key (flags.pin_memory) cannot be set under hydra.sweeper.params from the
    command line (Hydra reads the dots as nesting): its values stay."""
    params = OmegaConf.load(conf_dir() / "experiment" / f"{experiment}.yaml").hydra.sweeper.params
    tiny, jobs = {}, 1
    for key, values in params.items():
        options = [v.strip() for v in str(values).split(",")]
        if "." in key:
            jobs *= len(options)
            continue
        tiny[key] = SMALL.get(key) or next(v for v in options if v not in NEEDS_GPU)
    return tiny, jobs


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_runs_on_the_cpu(experiment, tmp_path, cache_dir):
    generate(tmp_path / "demo", classes=2, per_class=4)
    tiny, jobs = tiny_params(experiment)
    proc = run_cli(["-m", f"experiment={experiment}", "data.root=demo", "device=cpu",
                    *(f"hydra.sweeper.params.{k}={v}" for k, v in tiny.items()),
                    "tracking.enabled=false", *QUICK], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = list(only_sweep_dir(tmp_path).glob("*/result.json"))
    assert len(results) == jobs, results
    for path in results:
        result = json.loads(path.read_text())
        assert result["status"] == "ok", result.get("error")
        for key, value in tiny.items():  # a case is not a param: it sets runtime and precision
            if key in result["params"]:
                assert str(result["params"][key]).lower() == value.lower(), (key, result["params"])
