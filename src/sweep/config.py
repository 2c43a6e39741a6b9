"""Typed schemas for the sweep's configuration.

The YAML files under ``conf/`` hold values; these dataclasses hold the shape, the defaults and
the validation. Hydra composes YAML onto them, ``OmegaConf.to_object`` turns the result into
a :class:`SweepConfig`, and below that point no code sees a DictConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")
ISOLATIONS = ("inline", "process")
FAULTS = ("hang", "segfault", "exit")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message says what to type instead."""


def config_error(key: str, value: Any, allowed: str, hint: str = "") -> ConfigError:
    """Build the one error format used everywhere: key, value received, what is allowed."""
    msg = f"{key}={value!r} is not valid: {allowed}."
    if hint:
        msg += f" {hint}"
    return ConfigError(msg)


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise config_error(
            key, value, f"allowed values are {', '.join(choices)}", f"e.g. {key}={choices[0]}"
        )


def _positive(key: str, value: Any, minimum: float = 1) -> None:
    if not isinstance(value, int | float) or value < minimum:
        raise config_error(key, value, f"must be a number >= {minimum}", f"e.g. {key}={minimum}")


# --- runtimes: one schema per runtime, selected by the `runtime` group ---------------------


@dataclass
class RuntimeConfig:
    name: str = "torch"


@dataclass
class TorchRuntimeConfig(RuntimeConfig):
    """Eager PyTorch."""

    name: str = "torch"


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class CompileRuntimeConfig(RuntimeConfig):
    """torch.compile with inductor; `reduce-overhead` adds CUDA graphs."""

    name: str = "compile"
    mode: str = "default"
    fullgraph: bool = False
    dynamic: bool = False
    # inductor's `freezing`: weights become constants (folded, prepacked for oneDNN on the CPU);
    # compiled graphs then bypass the FX graph cache.
    freezing: bool = False

    def __post_init__(self) -> None:
        _choice("runtime.mode", self.mode, COMPILE_MODES)


ORT_PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
ORT_OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass
class OnnxRuntimeConfig(RuntimeConfig):
    """torch.onnx export + ONNX Runtime; the provider follows the device unless set."""

    name: str = "onnx"
    opset: int = 18
    provider: str = "auto"
    graph_optimization: str = "all"
    intra_op_threads: int = 0  # 0 = ONNX Runtime's default
    inter_op_threads: int = 0
    io_binding: bool = True
    cuda_graph: bool = False
    prefer_nhwc: bool = True
    calibration_batches: int = 8  # int8 static quantisation

    def __post_init__(self) -> None:
        _choice("runtime.provider", self.provider, ORT_PROVIDERS)
        _choice("runtime.graph_optimization", self.graph_optimization, ORT_OPT_LEVELS)
        _positive("runtime.opset", self.opset, 13)
        _positive("runtime.calibration_batches", self.calibration_batches, 1)


@dataclass
class TrtRuntimeConfig(RuntimeConfig):
    """Torch-TensorRT, dynamo IR."""

    name: str = "trt"
    workspace_gb: float = 4.0
    optimization_level: int = 3
    calibration_batches: int = 8

    def __post_init__(self) -> None:
        if self.optimization_level not in range(6):
            raise config_error(
                "runtime.optimization_level", self.optimization_level, "allowed values are 0..5"
            )
        _positive("runtime.workspace_gb", self.workspace_gb, 0.25)
        _positive("runtime.calibration_batches", self.calibration_batches, 1)


# --- the other groups --------------------------------------------------------------------


@dataclass
class ModelConfig:
    """A torchvision classification model by name, optionally with the user's weights."""

    name: str = "resnet18"
    weights: str | None = None  # path to a .pth state dict, loaded with weights_only=True
    num_classes: int = 1000
    seed: int = 0  # random initialisation when no weights are given

    def __post_init__(self) -> None:
        _positive("model.num_classes", self.num_classes, 1)


@dataclass
class HardwareConfig:
    """Datasheet peaks (dense, no sparsity) per precision; `auto` picks the entry for the device."""

    name: str = "auto"
    description: str = ""
    match: list[str] = field(default_factory=list)  # substrings of the device name
    peak_tflops: dict[str, float | None] = field(default_factory=dict)
    mem_bw_gbs: float | None = None
    source: str = ""


DATA_SOURCES = ("synthetic", "imagefolder")


@dataclass
class DataConfig:
    """`synthetic`: random tensors (pure inference). `imagefolder`: `root` holds one folder per
    class of JPEG/PNG files; the class index is the sorted folder names."""

    name: str = "synthetic"
    root: str | None = None
    max_images: int = 256  # end-to-end passes use at most this many files, spread over classes
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("data", self.name, DATA_SOURCES)
        _positive("data.max_images", self.max_images, 1)
        if self.name == "imagefolder":
            from sweep.data import check_root

            check_root(self.root)


PIPELINES = ("current", "fast", "gpu")
# pipeline=gpu in the job's process serialises with eager inference through the GIL; 4 workers
# were the fastest on the H100 (benchmarks/results/e2e_process_h100_2026-11-24)
PIPELINE_PROCESSES = {"gpu": 4}


@dataclass
class PipelineConfig:
    """How files become input batches (data=imagefolder): `current` per image on the CPU (PIL),
    `fast` batched and parallel on the CPU, `gpu` nvJPEG decode and preprocessing on the GPU."""

    name: str = "current"
    workers: int = 0  # fast: decode threads (0 = one per CPU core); gpu: file readers (0, 1: one)
    prefetch: int = 2  # batches prepared ahead (by a thread, or by each worker process)
    # worker processes preparing the batches, each with its own GIL (0: threads of the job's
    # process); unset: the pipeline's default, PIPELINE_PROCESSES
    processes: int | None = None

    def __post_init__(self) -> None:
        _choice("pipeline", self.name, PIPELINES)
        _positive("pipeline.workers", self.workers, 0)
        _positive("pipeline.prefetch", self.prefetch, 0)
        if self.processes is None:
            self.processes = PIPELINE_PROCESSES.get(self.name, 0)
        _positive("pipeline.processes", self.processes, 0)


@dataclass
class FlagsConfig:
    channels_last: bool = False
    pin_memory: bool = False
    gpu_non_blocking: bool = False


@dataclass
class BenchConfig:
    """Warm up, then time until both `min_iters` and `min_seconds` are reached."""

    warmup: int = 5
    min_iters: int = 20
    min_seconds: float = 1.0

    def __post_init__(self) -> None:
        _positive("bench.warmup", self.warmup, 0)
        _positive("bench.min_iters", self.min_iters, 1)
        _positive("bench.min_seconds", self.min_seconds, 0)


@dataclass
class CheckConfig:
    """Correctness of every job against PyTorch fp32 on `samples` inputs (rounded up to whole
    batches)."""

    enabled: bool = True
    samples: int = 16

    def __post_init__(self) -> None:
        _positive("check.samples", self.samples, 1)


@dataclass
class TrackingConfig:
    """MLflow; `MLFLOW_TRACKING_URI` wins over `uri` when set."""

    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "sweep"


@dataclass
class SweepConfig:
    runtime: Any = None
    model: ModelConfig = field(default_factory=ModelConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    resolution: int = 224
    batch: int = 1
    precision: str = "fp32"
    device: str = "auto"
    flags: FlagsConfig = field(default_factory=FlagsConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cache_dir: str | None = None  # default ~/.cache/sweep
    # how jobs run: inline (in the launcher's process) or each in a fresh process, with a timeout
    isolation: str = "inline"
    timeout_s: float = 0.0  # per job, isolation=process only; 0 = none
    force: bool = False  # re-run jobs whose folder already holds a complete result
    gpus: list[int] | None = None  # spread jobs over these GPUs, one each (isolation=process)
    fault: str | None = None  # inject a fault (hang, segfault, exit) to test isolation
    fault_at: dict[int, str] = field(default_factory=dict)  # {job number: fault}, chosen jobs

    def __post_init__(self) -> None:
        _choice("isolation", self.isolation, ISOLATIONS)
        _positive("timeout_s", self.timeout_s, 0)
        if self.fault is not None:
            _choice("fault", self.fault, FAULTS)
            if self.isolation != "process":
                raise config_error("fault", self.fault, "a fault would take the whole sweep down "
                                   "with isolation=inline", "Add isolation=process.")
        if self.gpus and self.isolation != "process":
            raise config_error("gpus", self.gpus, "each job must see one device, which needs a "
                               "fresh process per job", "Add isolation=process.")
        if not isinstance(self.runtime, RuntimeConfig):
            raise config_error(
                "runtime", self.runtime, f"allowed values are {', '.join(RUNTIME_SCHEMAS)}"
            )
        _positive("batch", self.batch, 1)
        _positive("resolution", self.resolution, 8)
        _choice("precision", self.precision, PRECISIONS)
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise config_error(
                "device", self.device, "allowed values are auto, cpu, cuda, cuda:N", "e.g. device=cpu"
            )
        if self.pipeline.name != "current" and self.data.name != "imagefolder":
            raise config_error(
                "pipeline", self.pipeline.name,
                f"input pipelines need files to read, and data={self.data.name} has none",
                "Use data=imagefolder data.root=<folder of class folders>, or pipeline=current.")
        if self.pipeline.name == "gpu" and self.device == "cpu":
            raise config_error("pipeline", "gpu", "it decodes on a CUDA device and device=cpu",
                               "Use device=cuda, or pipeline=fast on the CPU.")

    @property
    def job_name(self) -> str:
        """Readable name of a job, e.g. ``torch-resnet18-224-b8-fp32``."""
        runtime = self.runtime.name
        if getattr(self.runtime, "mode", "default") != "default":  # compile's modes differ a lot
            runtime += f"-{self.runtime.mode}"
        parts = [runtime, self.model.name, str(self.resolution), f"b{self.batch}"]
        parts.append(self.precision)
        if self.data.name == "imagefolder":
            parts.append(self.pipeline.name)
            default = PipelineConfig(name=self.pipeline.name)
            if self.pipeline.workers != default.workers:
                parts.append(f"w{self.pipeline.workers}")
            if self.pipeline.prefetch != default.prefetch:
                parts.append(f"pf{self.pipeline.prefetch}")
            if self.pipeline.processes != default.processes:
                parts.append(f"p{self.pipeline.processes}")
        if self.flags.channels_last:
            parts.append("cl")
        if self.flags.pin_memory:
            parts.append("pin")
        if self.flags.gpu_non_blocking:
            parts.append("nb")
        return "-".join(parts)


RUNTIME_SCHEMAS: dict[str, type[RuntimeConfig]] = {
    "torch": TorchRuntimeConfig,
    "compile": CompileRuntimeConfig,
    "onnx": OnnxRuntimeConfig,
    "trt": TrtRuntimeConfig,
}


def from_container(data: dict[str, Any]) -> SweepConfig:
    """A resolved config (e.g. a job folder's config.yaml) -> SweepConfig, validated as Hydra's
    composition would: the runtime node gets the schema its name selects."""
    from omegaconf import OmegaConf

    data = {k: v for k, v in data.items() if k != "hydra"}
    runtime = data.pop("runtime", None) or {}
    if runtime.get("name") not in RUNTIME_SCHEMAS:
        raise config_error("runtime", runtime.get("name"),
                           f"allowed values are {', '.join(RUNTIME_SCHEMAS)}")
    cfg = OmegaConf.merge(OmegaConf.structured(SweepConfig), data)
    cfg.runtime = OmegaConf.merge(OmegaConf.structured(RUNTIME_SCHEMAS[runtime["name"]]), runtime)
    return OmegaConf.to_object(cfg)


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; YAML files list them in their defaults."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=SweepConfig)
    for name, schema in RUNTIME_SCHEMAS.items():
        cs.store(group="schema/runtime", name=name, node=schema)
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/hardware", name="hardware", node=HardwareConfig)
    cs.store(group="schema/data", name="data", node=DataConfig)
    cs.store(group="schema/tracking", name="tracking", node=TrackingConfig)
    cs.store(group="schema/pipeline", name="pipeline", node=PipelineConfig)
