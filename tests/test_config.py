"""Every config group composes into a typed SweepConfig; bad values fail with clear messages."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from sweep.config import RUNTIME_SCHEMAS, SweepConfig, register_configs
from sweep.errors import ConfigError
from sweep.paths import conf_dir
from sweep.result import flatten, job_name

register_configs()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def make(*overrides: str) -> SweepConfig:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return OmegaConf.to_object(compose("config", overrides=list(overrides)))


def test_groups_hold_what_the_interface_promises():
    assert set(options("runtime")) == {"torch", "compile", "onnx", "trt", "openvino"}
    assert {"resnet18", "resnet50"} <= set(options("model"))
    assert set(options("hardware")) >= {"auto", "cpu", "h100_sxm", "h200", "a100",
                                        "rtx4060_laptop", "rtx4070ti", "jetson_orin_nano"}
    assert "synthetic" in options("data")
    assert set(options("tracking")) == {"local", "server"}
    assert {"local_gpus", "slurm"} <= set(options("hydra/launcher"))


@pytest.mark.parametrize("group", ["runtime", "model", "hardware", "data"])
def test_every_option_composes_to_its_schema(group, tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.jpg").write_bytes(b"")
    needs = {"imagefolder": [f"data.root={tmp_path}"]}  # data=imagefolder needs a folder to read
    if group == "model":  # a model file is named by its stem; timm's default is its resnet18
        needs.update(onnx=["model.path=onnx.onnx"], exported=["model.path=dir/exported.pt2"])
    named = {"timm": "resnet18"} if group == "model" else {}
    for name in options(group):
        cfg = make(f"{group}={name}", *needs.get(name, []))
        node = getattr(cfg, group)
        assert node.name == named.get(name, name)
        if group == "runtime":
            assert type(node) is RUNTIME_SCHEMAS[name]


def test_default_is_the_embedded_cpu_job():
    from sweep.job import resolve_resolution

    cfg = make()
    assert (cfg.runtime.name, cfg.model.name, cfg.resolution, cfg.batch, cfg.precision) == (
        "torch", "resnet18", None, 1, "fp32")  # None: the model's own, resolved per job
    assert resolve_resolution(cfg) == "torchvision builds resnet18 for 224"
    assert cfg.resolution == 224
    assert cfg.tracking.uri == "sqlite:///mlflow.db"
    assert job_name(flatten(cfg)) == "torch-resnet18-224-b1-fp32"


def test_hardware_entries_have_peaks_for_every_precision():
    for name in options("hardware"):
        if name in ("auto", "cpu"):
            continue
        peaks = make(f"hardware={name}").hardware.peak_tflops
        assert set(peaks) == {"fp32", "tf32", "fp16", "bf16", "int8"}
        assert all(v > 0 for v in peaks.values())
        assert peaks["fp16"] >= peaks["fp32"]


def test_any_torchvision_model_by_name():
    assert make("model.name=mobilenet_v3_small", "model.num_classes=10").model.name == (
        "mobilenet_v3_small")


@pytest.mark.parametrize("override, key, shown", [
    ("batch=0", "batch=0", ">= 1"),
    ("batch=-3", "batch=-3", ">= 1"),
    ("precision=fp64", "precision='fp64'", "fp32, tf32, fp16, bf16, int8"),
    ("resolution=4", "resolution=4", ">= 8"),
    ("resolution=100000", "resolution=100000", "8..8192 pixels"),
    ("device=tpu", "device='tpu'", "auto, cpu, cuda"),
    ("runtime=compile runtime.mode=fast", "runtime.mode='fast'", "reduce-overhead"),
    ("runtime=onnx runtime.provider=rocm", "runtime.provider='rocm'", "cuda, tensorrt"),
    ("runtime=compile runtime.mode=reduce-overhead runtime.cuda_graph=true",
     "runtime.cuda_graph=True", "runtime.mode=default runtime.cuda_graph=true"),
    ("bench.min_iters=0", "bench.min_iters=0", ">= 1"),
])
def test_bad_values_name_key_value_and_allowed(override, key, shown):
    with pytest.raises(ConfigError) as e:
        make(*override.split())
    assert key in str(e.value) and shown in str(e.value)


def test_unknown_runtime_lists_the_options():
    with pytest.raises(MissingConfigException) as e:
        make("runtime=tensorflow")
    msg = str(e.value)
    assert "runtime/tensorflow" in msg
    for name in ("torch", "compile", "onnx", "trt"):
        assert name in msg
    assert "base_" not in msg  # schemas stay out of the user's list


def test_typo_in_a_runtime_option_is_refused():
    with pytest.raises(ConfigCompositionException):
        make("runtime=onnx", "runtime.opsett=17")


def _schema_of(path) -> object:
    """The schema instance a group's YAML file composes onto (its `/schema/<group>` default)."""
    from sweep.config import (
        _CHOSEN,
        DataConfig,
        HardwareConfig,
        ModelConfig,
        TrackingConfig,
    )

    families = {**_CHOSEN, "tracking": TrackingConfig}
    plain = {"model": ModelConfig, "data": DataConfig, "hardware": HardwareConfig}
    for entry in OmegaConf.load(path).get("defaults", []):
        if isinstance(entry, str) or not str(next(iter(entry))).startswith("/schema/"):
            continue
        key, name = next(iter(entry.items()))
        group = key.split("/")[2].split("@")[0]
        return plain[group]() if group in plain else families[group].choices[name]()
    raise AssertionError(f"{path} names no /schema/ default")


SCHEMA_GROUPS = ("runtime", "pipeline", "scenario", "tracking", "model", "data", "hardware")


@pytest.mark.parametrize("path", [conf_dir() / "config.yaml", *(
    p for g in SCHEMA_GROUPS for p in sorted((conf_dir() / g).glob("*.yaml")))],
    ids=lambda p: f"{p.parent.name}/{p.name}")
def test_conf_yaml_sets_only_what_differs_from_its_schema(path):
    """The rule: a YAML file of a schema's group (and config.yaml, over SweepConfig) sets only the
    values that differ from the schema's defaults; a repeated default is removed, so that the
    schema alone holds it and the two cannot drift apart. Cases and experiments are exempt: they
    fix a seed's suite, which a later change of a default must not move."""
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    from sweep.config import TorchRuntimeConfig

    schema = (SweepConfig(runtime=TorchRuntimeConfig()) if path.name == "config.yaml"
              else _schema_of(path))
    repeated = {k: v for k, v in raw.items()
                if k not in ("defaults", "hydra") and hasattr(schema, k)
                and getattr(schema, k) == v}
    assert not repeated, f"{path} repeats its schema's defaults: {repeated}"
    unknown = sorted(k for k in raw if k not in ("defaults", "hydra") and not hasattr(schema, k))
    assert not unknown, f"{path} sets keys its schema lacks: {unknown}"
