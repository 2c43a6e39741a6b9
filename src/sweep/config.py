"""Typed schemas for the sweep's configuration, and the one registry of each config group.

The YAML files under ``sweep/conf/`` hold values; these dataclasses hold the shape, the defaults and
the validation. Hydra composes YAML onto them, ``OmegaConf.to_object`` turns the result into
a :class:`SweepConfig`, and below that point no code sees a DictConfig. A group whose choices
are implementations (runtime, pipeline, scenario, tracking) has one schema per choice, registered
by ``@choice`` under its ``name``, and the schema names the class that implements it (``impl``).
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from hydra.core.config_store import ConfigStore

from sweep.errors import config_error

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")
ISOLATIONS = ("inline", "process")
FAULTS = ("hang", "segfault", "exit")
DEVICES = ("auto", "cpu", "cuda")
# the input side, in pixels: beyond it, one fp32 image alone is over 800 MB and its activations
# are many times that
MAX_RESOLUTION = 8192


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise config_error(
            key, value, f"allowed values are {', '.join(choices)}", f"e.g. {key}={choices[0]}"
        )


_SEED = (0, 2**32 - 1)
# every numeric key's range, by its flat name: checked with the others before anything starts.
# The upper ends keep a typo (1e9 rounds, a target rate of 1e9 qps) from hanging a sweep or
# exhausting memory before its first job; none limits a measurement anyone would make.
BOUNDS: dict[str, tuple[float, float]] = {
    "model.num_classes": (1, 100_000), "model.seed": _SEED,
    "hardware.mem_bw_gbs": (0.001, 1e6),
    "data.max_images": (1, 10_000_000), "data.seed": _SEED,
    "resolution": (8, MAX_RESOLUTION), "batch": (1, 2**31 - 1),
    "bench.warmup": (0, 1_000_000), "bench.min_iters": (1, 10_000_000),
    "bench.min_seconds": (0, 86_400), "bench.rounds": (1, 1000), "bench.round": (0, 1000),
    "bench.telemetry_interval_ms": (1, 60_000), "bench.stable_cv_pct": (0, 1000),
    "check.samples": (1, 100_000), "timeout_s": (0, 7 * 86_400),
    "runtime.opset": (13, 30), "runtime.intra_op_threads": (0, 4096),
    "runtime.inter_op_threads": (0, 4096), "runtime.calibration_batches": (1, 10_000),
    "runtime.workspace_gb": (0.25, 4096), "runtime.optimization_level": (0, 5),
    "runtime.streams": (0, 4096), "runtime.threads": (0, 4096),
    "pipeline.workers": (0, 1024), "pipeline.prefetch": (0, 1024),
    "pipeline.processes": (0, 1024), "pipeline.hw_decoder_load": (0, 1),
    "scenario.duration_s": (0.05, 3600), "scenario.min_requests": (1, 10_000_000),
    "scenario.max_queue_delay_ms": (0, 60_000), "scenario.overload_ms": (1, 600_000),
    "scenario.slo_ms": (0.001, 600_000), "scenario.slo_percentile": (50, 99.999),
    "scenario.seed": _SEED, "scenario.in_flight": (1, 64),
    "scenario.target_qps": (0.001, 1_000_000), "scenario.clients": (1, 10_000),
    "postprocess.conf": (0, 1), "postprocess.iou": (0, 1), "postprocess.max_det": (1, 100_000),
}
# the most requests one load step may hold in memory (target_qps x duration_s, min_requests)
MAX_REQUESTS = 10_000_000


def _number(key: str, value: Any) -> None:
    """`value` is a finite number in BOUNDS[key] (None passes: an unset optional key)."""
    if value is None:
        return
    low, high = BOUNDS[key]
    fine = isinstance(value, int | float) and not isinstance(value, bool)
    if not fine or not math.isfinite(value) or not low <= value <= high:
        raise config_error(key, value, f"must be a number >= {low:g} and <= {high:g}",
                           f"e.g. {key}={low:g}")


# --- groups whose choices are implementations ----------------------------------------------

S = TypeVar("S", bound=type)


class Choice:
    """A schema that names its implementation (``impl``: "module:Class", imported when used).
    Each family base holds its own ``choices``: the one registry of that config group."""

    impl: ClassVar[str] = ""
    choices: ClassVar[dict[str, type]]

    @classmethod
    def implementation(cls) -> type:
        module, name = cls.impl.split(":")
        return getattr(importlib.import_module(module), name)


def choice(schema: S) -> S:
    """Register a schema under its `name` default in its family's registry."""
    schema.choices[schema.name] = schema
    return schema


def choices_of(family: type[Choice]) -> str:
    return ", ".join(family.choices)


def choose(family: type[Choice], key: str, name: Any, **values: Any) -> Any:
    """The schema of choice `name` of a family, with `values`; a ConfigError for an unknown one."""
    if name not in family.choices:
        raise config_error(key, name, f"allowed values are {choices_of(family)}",
                           f"e.g. {key}={next(iter(family.choices))}")
    return family.choices[name](**values)


# --- runtimes: one schema per runtime, selected by the `runtime` group ---------------------


@dataclass
class RuntimeConfig(Choice):
    choices: ClassVar[dict[str, type]] = {}
    impl: ClassVar[str] = "sweep.runtimes.torch_eager:TorchRuntime"
    name: str = "torch"


@choice
@dataclass
class TorchRuntimeConfig(RuntimeConfig):
    """Eager PyTorch."""

    impl: ClassVar[str] = "sweep.runtimes.torch_eager:TorchRuntime"
    name: str = "torch"
    cuda_graph: bool = False  # on CUDA: the model captured in one CUDA graph, replayed per call


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
GRAPHED_MODES = ("reduce-overhead", "max-autotune")  # the modes with inductor's CUDA graphs


@choice
@dataclass
class CompileRuntimeConfig(RuntimeConfig):
    """torch.compile with inductor; `reduce-overhead` adds CUDA graphs."""

    impl: ClassVar[str] = "sweep.runtimes.inductor:CompileRuntime"
    name: str = "compile"
    mode: str = "default"
    fullgraph: bool = False
    dynamic: bool = False
    # inductor's `freezing`: weights become constants (folded, prepacked for oneDNN on the CPU);
    # compiled graphs then bypass the FX graph cache.
    freezing: bool = False
    # on CUDA: the compiled model captured in one CUDA graph and replayed directly, without
    # the per-call work of the CUDA graph trees that reduce-overhead uses
    cuda_graph: bool = False

    def __post_init__(self) -> None:
        _choice("runtime.mode", self.mode, COMPILE_MODES)
        if self.cuda_graph and self.mode in GRAPHED_MODES:
            raise config_error(
                "runtime.cuda_graph", self.cuda_graph,
                f"runtime.mode={self.mode} already captures CUDA graphs (inductor's CUDA graph "
                "trees), and one graph cannot be captured inside another",
                "Use runtime.mode=default runtime.cuda_graph=true (one graph, replayed "
                f"directly), or runtime.mode={self.mode} alone.")


ORT_PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
ORT_OPT_LEVELS = ("disable", "basic", "extended", "all")


@choice
@dataclass
class OnnxRuntimeConfig(RuntimeConfig):
    """torch.onnx export + ONNX Runtime; the provider follows the device unless set."""

    impl: ClassVar[str] = "sweep.runtimes.ort:OnnxRuntime"
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
        _number("runtime.opset", self.opset)
        _number("runtime.calibration_batches", self.calibration_batches)
        _number("runtime.intra_op_threads", self.intra_op_threads)
        _number("runtime.inter_op_threads", self.inter_op_threads)


@choice
@dataclass
class TrtRuntimeConfig(RuntimeConfig):
    """Torch-TensorRT, dynamo IR."""

    impl: ClassVar[str] = "sweep.runtimes.tensorrt:TensorRTRuntime"
    name: str = "trt"
    workspace_gb: float = 4.0
    optimization_level: int = 3
    calibration_batches: int = 8

    def __post_init__(self) -> None:
        if self.optimization_level not in range(6):
            raise config_error(
                "runtime.optimization_level", self.optimization_level, "allowed values are 0..5"
            )
        _number("runtime.workspace_gb", self.workspace_gb)
        _number("runtime.calibration_batches", self.calibration_batches)


OV_HINTS = ("latency", "throughput")
OV_DEVICES = ("CPU", "GPU")


@choice
@dataclass
class OpenVinoRuntimeConfig(RuntimeConfig):
    """OpenVINO on the CPU (or an Intel GPU): the ONNX export (or the user's ONNX file), read by
    OpenVINO, reshaped to the job's batch and compiled; compiled models kept in its cache."""

    impl: ClassVar[str] = "sweep.runtimes.openvino:OpenVinoRuntime"
    name: str = "openvino"
    device: str = "CPU"  # OpenVINO's device; GPU: an Intel GPU (inputs stay on the host)
    hint: str = "latency"  # PERFORMANCE_HINT
    streams: int = 0  # NUM_STREAMS; 0: what the hint chooses
    threads: int = 0  # INFERENCE_NUM_THREADS; 0: OpenVINO's default
    opset: int = 18  # of the ONNX export, shared with runtime=onnx
    calibration_batches: int = 8  # int8 (NNCF): the same batches as runtime=onnx's int8

    def __post_init__(self) -> None:
        _choice("runtime.device", self.device, OV_DEVICES)
        _choice("runtime.hint", self.hint, OV_HINTS)
        _number("runtime.streams", self.streams)
        _number("runtime.threads", self.threads)
        _number("runtime.opset", self.opset)
        _number("runtime.calibration_batches", self.calibration_batches)


# --- the other groups --------------------------------------------------------------------


MODEL_KINDS = ("torchvision", "timm", "onnx", "exported")
# what a model's outputs mean (sweep.tasks): None infers it from the model
TASK_NAMES = ("classify", "detect", "segment", "raw")
OUTPUT_FORMATS = ("yolo", "torchvision")  # how a detector's ONNX file lays out its outputs
FILE_MODEL_KINDS = {"onnx": ".onnx", "exported": ".pt2"}  # kinds whose model is a file


@dataclass
class ModelConfig:
    """Where the model comes from (`kind`): a torchvision or timm architecture by `name`,
    optionally with the user's weights; or the user's own file (`path`): an ONNX model, run as it
    is, or a `torch.export` program (.pt2)."""

    name: str = "resnet18"
    weights: str | None = None  # path to a .pth state dict, loaded with weights_only=True
    num_classes: int = 1000
    seed: int = 0  # random initialisation when no weights are given
    kind: str = "torchvision"
    path: str | None = None  # kind=onnx | exported: the model file
    # classify | detect | segment | raw; None: inferred from the model (job info `task_from`)
    task: str | None = None
    output_format: str | None = None  # a detector file's outputs: yolo | torchvision

    def __post_init__(self) -> None:
        _number("model.num_classes", self.num_classes)
        _number("model.seed", self.seed)
        _choice("model.kind", self.kind, MODEL_KINDS)
        if self.task is not None:
            _choice("model.task", self.task, TASK_NAMES)
        if self.output_format is not None:
            if self.output_format not in OUTPUT_FORMATS:
                raise config_error("model.output_format", self.output_format,
                                   f"allowed values are {', '.join(OUTPUT_FORMATS)} (or null: "
                                   "the task reads the outputs)",
                                   "e.g. model.output_format=yolo for a YOLOv8/11 ONNX export")
            if self.task not in (None, "detect"):
                raise config_error("model.output_format", self.output_format,
                                   f"only detectors' outputs have a format, and model.task="
                                   f"{self.task}", "Drop model.output_format, or set "
                                   "model.task=detect.")
        suffix = FILE_MODEL_KINDS.get(self.kind)
        if suffix and not self.path:
            raise config_error("model.path", self.path, f"model={self.kind} benchmarks a file",
                               f"e.g. model={self.kind} model.path=model{suffix}")
        if suffix and self.weights:
            raise config_error("model.weights", self.weights,
                               f"the weights of model={self.kind} are in its file",
                               "Drop model.weights.")
        if not suffix and self.path:
            raise config_error("model.path", self.path,
                               f"model={self.kind} builds an architecture by name",
                               "Use model=onnx or model=exported for a model file, or "
                               "model.weights=<state dict .pth> for your weights.")


@dataclass
class HardwareConfig:
    """Datasheet peaks (dense, no sparsity) per precision; `auto` picks the entry for the device."""

    name: str = "auto"
    description: str = ""
    match: list[str] = field(default_factory=list)  # substrings of the device name
    peak_tflops: dict[str, float | None] = field(default_factory=dict)
    mem_bw_gbs: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        _number("hardware.mem_bw_gbs", self.mem_bw_gbs)


DATA_SOURCES = ("synthetic", "imagefolder", "coco", "masks")
LABELLED_SOURCES = ("coco", "masks")  # files with task labels: detectors' boxes, segmenters' masks


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
        _number("data.max_images", self.max_images)
        _number("data.seed", self.seed)
        if self.name == "imagefolder":
            from sweep.data import check_root

            check_root(self.root)
        if self.name in LABELLED_SOURCES and not self.root:
            raise config_error("data.root", self.root, f"data={self.name} reads a folder",
                               "e.g. data.root=<folder with annotations.json and its images>"
                               if self.name == "coco" else
                               "e.g. data.root=<folder with images/ and masks/>")


RESIZES = ("letterbox", "stretch", "shorter_side_crop")  # sweep.tasks.geometry's


@dataclass
class PostprocessConfig:
    """Detectors' post-processing (a timed stage): boxes scoring at least `conf`, per-class NMS
    at IoU `iou`, at most `max_det` per image. The correctness check uses its own low threshold
    (sweep.tasks.detect.CHECK_CONF) so that random weights still give boxes to compare."""

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300

    def __post_init__(self) -> None:
        _number("postprocess.conf", self.conf)
        _number("postprocess.iou", self.iou)
        _number("postprocess.max_det", self.max_det)


def size_of(resolution: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a `resolution`: one int is square."""
    if isinstance(resolution, int):
        return resolution, resolution
    return int(resolution[0]), int(resolution[1])


def check_resolution_value(value: Any) -> int | list[int] | None:
    """`resolution`: None, one side, or [height, width] (a pair of equal sides stays a list:
    the user typed it); each side within BOUNDS."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise config_error("resolution", list(value), "one side, or [height, width]",
                               "e.g. resolution=224 or resolution=[384,640]")
        for side in value:
            _side(side, list(value))
        return [int(v) for v in value]
    _side(value, value)
    return value


def _side(side: Any, value: Any) -> None:
    low, high = BOUNDS["resolution"]
    fine = isinstance(side, int) and not isinstance(side, bool)
    if not fine or not low <= side <= high:
        raise config_error("resolution", value, f"each side must be a whole number of pixels, "
                           f"{low:g}..{high:g} (the input side must be 8..{MAX_RESOLUTION} "
                           "pixels)", "e.g. resolution=224 (resolution=512 for a large input), "
                           "or resolution=[384,640] (height, width)")


# --- pipelines: one schema per input pipeline, selected by the `pipeline` group ---------------


@dataclass
class PipelineConfig(Choice):
    """How files become input batches (data=imagefolder)."""

    choices: ClassVar[dict[str, type]] = {}
    name: str = "serial"
    workers: int = 0  # fast: decode threads (0 = one per CPU core); gpu: file readers (0, 1: one)
    prefetch: int = 2  # batches prepared ahead (by a thread, or by each worker process)
    # worker processes preparing the batches, each with its own GIL (0: threads of the job's
    # process)
    processes: int = 0
    # letterbox | stretch | shorter_side_crop; None: by task (detect: letterbox; others: the
    # pipeline's own resize, as before tasks)
    resize: str | None = None

    def __post_init__(self) -> None:
        _choice("pipeline", self.name, tuple(self.choices))
        if self.resize is not None:
            _choice("pipeline.resize", self.resize, RESIZES)
        _number("pipeline.workers", self.workers)
        _number("pipeline.prefetch", self.prefetch)
        _number("pipeline.processes", self.processes)


@choice
@dataclass
class SerialPipelineConfig(PipelineConfig):
    """Per image on the CPU (PIL), nothing overlapped."""

    impl: ClassVar[str] = "sweep.pipelines.serial:SerialPipeline"
    name: str = "serial"


# seed 000's name for pipeline=serial: its suites and the job folders they wrote still read
PipelineConfig.choices["current"] = SerialPipelineConfig


@choice
@dataclass
class FastPipelineConfig(PipelineConfig):
    """Batched and parallel on the CPU, the uint8 batch normalised on the device."""

    impl: ClassVar[str] = "sweep.pipelines.fast:FastPipeline"
    name: str = "fast"


GPU_DECODERS = ("torchvision", "nvimgcodec")
NVIMGCODEC_BACKENDS = ("hw", "gpu", "hybrid")


@choice
@dataclass
class GpuPipelineConfig(PipelineConfig):
    """nvJPEG decode and preprocessing on the GPU."""

    impl: ClassVar[str] = "sweep.pipelines.gpu:GpuPipeline"
    name: str = "gpu"
    # in the job's process it serialises with eager inference through the GIL (measured:
    # benchmarks/results/e2e_process_h100_2026-11-24)
    processes: int = 4
    decoder: str = "torchvision"  # torchvision's nvJPEG, or nvImageCodec's decoder
    backend: str = "hw"  # nvimgcodec: hw (the hardware JPEG engine), gpu (CUDA), hybrid

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("pipeline.decoder", self.decoder, GPU_DECODERS)
        _choice("pipeline.backend", self.backend, NVIMGCODEC_BACKENDS)


@choice
@dataclass
class DaliPipelineConfig(PipelineConfig):
    """NVIDIA DALI: read, decode (the mixed decoder on a GPU, DALI's CPU backend on a CPU),
    resize and normalise in one graph; `workers` are DALI's threads, `prefetch` its queue."""

    impl: ClassVar[str] = "sweep.pipelines.dali:DaliPipeline"
    name: str = "dali"
    # an external source's batches wait on the Python thread: a deeper queue hides it
    # (benchmarks/results/h200_e2e_serving_2026-12-02b)
    prefetch: int = 4
    # share of the JPEGs for the hardware decoder, above DALI's own 0.65
    # (benchmarks/results/h200_mps_ort_2026-12-02c)
    hw_decoder_load: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.hw_decoder_load <= 1:
            raise config_error("pipeline.hw_decoder_load", self.hw_decoder_load,
                               "must be between 0 and 1", "e.g. pipeline.hw_decoder_load=0.9")
        if self.processes:
            raise config_error("pipeline.processes", self.processes,
                               "DALI runs its own threads and prefetch queue; worker processes "
                               "are for pipeline=fast and pipeline=gpu",
                               "Use pipeline.processes=0 with pipeline=dali.")


def pipeline_config(name: str = "serial", **values: Any) -> PipelineConfig:
    """The schema of `pipeline=name` with `values` (its own defaults for the rest)."""
    return choose(PipelineConfig, "pipeline", name, **values)


# --- scenarios: ways of measuring, selected by the `scenario` group --------------------------


@dataclass
class ScenarioConfig(Choice):
    """What a job measures once its runtime is prepared and checked: pure inference, which every
    job runs first (`sweep.scenarios.scenarios_for`), then the scenario class ``impl`` names,
    where it applies to the job's config."""

    choices: ClassVar[dict[str, type]] = {}
    name: str = "offline"


@choice
@dataclass
class OfflineScenarioConfig(ScenarioConfig):
    """Batches back to back: pure inference, then files end to end when the data has files."""

    impl: ClassVar[str] = "sweep.scenarios.end_to_end:EndToEndScenario"
    name: str = "offline"


@dataclass
class LoadScenarioConfig(ScenarioConfig):
    """Requests of one image each, served by a dynamic batcher in front of the runtime (built for
    `batch`: a partly filled batch is padded). Pure inference runs first, for the offline figure
    beside the serving one. A request is a ready tensor (data=synthetic) or a file through the
    job's pipeline (data=imagefolder: decode and preprocessing inside the latency)."""

    duration_s: float = 2.0  # each measured load step lasts this long (and min_requests)
    min_requests: int = 200
    max_queue_delay_ms: float = 0.0  # the batcher waits this long for a batch to fill
    # the load cannot be taken once the oldest waiting request has waited this long
    overload_ms: float = 1000.0
    slo_ms: float | None = None  # search the highest rate whose latency percentile meets it
    slo_percentile: float = 99.0
    seed: int = 0
    in_flight: int = 2  # batches queued on the device at once (the host prepares the next)

    def __post_init__(self) -> None:
        _number("scenario.duration_s", self.duration_s)
        _number("scenario.in_flight", self.in_flight)
        _number("scenario.min_requests", self.min_requests)
        _number("scenario.max_queue_delay_ms", self.max_queue_delay_ms)
        _number("scenario.overload_ms", self.overload_ms)
        _number("scenario.seed", self.seed)
        if self.slo_ms is not None:
            _number("scenario.slo_ms", self.slo_ms)
        if not 50 <= self.slo_percentile < 100:
            raise config_error("scenario.slo_percentile", self.slo_percentile,
                               "must be at least 50 and below 100",
                               "e.g. scenario.slo_percentile=99")


@choice
@dataclass
class SingleStreamScenarioConfig(LoadScenarioConfig):
    """One request at a time, the next sent when the previous one answers."""

    impl: ClassVar[str] = "sweep.scenarios.serving:SingleStreamScenario"
    name: str = "single_stream"


@choice
@dataclass
class ServerScenarioConfig(LoadScenarioConfig):
    """Poisson arrivals at `target_qps` (or, with `slo_ms`, the highest rate that meets it)."""

    impl: ClassVar[str] = "sweep.scenarios.serving:ServerScenario"
    name: str = "server"
    target_qps: float | None = None  # None: half the measured rate of full batches back to back

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_qps is not None:
            _number("scenario.target_qps", self.target_qps)
            if self.target_qps * self.duration_s > MAX_REQUESTS:
                raise config_error("scenario.target_qps", self.target_qps,
                                   f"a load step of target_qps x duration_s "
                                   f"({self.duration_s:g} s) must hold at most {MAX_REQUESTS:,} "
                                   "requests", "Lower scenario.target_qps or scenario.duration_s.")


@choice
@dataclass
class ConcurrencyScenarioConfig(LoadScenarioConfig):
    """`clients` closed loops, each sending its next request when its last one answers."""

    impl: ClassVar[str] = "sweep.scenarios.serving:ConcurrencyScenario"
    name: str = "concurrency"
    clients: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        _number("scenario.clients", self.clients)


@dataclass
class FlagsConfig:
    channels_last: bool = False
    pin_memory: bool = False
    gpu_non_blocking: bool = False
    # cuDNN's autotuner (torch.backends.cudnn.benchmark): off as PyTorch's default, on in a
    # careful hand-written loop (timm's benchmark.py); a flag so a sweep can A/B it
    cudnn_benchmark: bool = False


CPU_SET = re.compile(r"none|gpu|\d+(-\d+)?(,\d+(-\d+)?)*")


@dataclass
class BenchConfig:
    """Warm up, then time until both `min_iters` and `min_seconds` are reached. With `rounds` > 1
    a multirun measures every job that many times, each round in a new shuffled job order
    (`sweep.rounds`); `round` is which one a job is measuring, set by the sweeper."""

    warmup: int = 5
    min_iters: int = 20
    min_seconds: float = 1.0
    rounds: int = 1
    round: int = 0  # 0: not in rounds; 1..rounds: set by the rounds sweeper
    telemetry: bool = True  # NVML on a GPU, RAPL on a CPU, across the timed span
    telemetry_interval_ms: float = 100.0
    stable_cv_pct: float = 5.0  # a timing CV above this adds a stability note (trtexec: 1%)
    # the CPUs of the timed span: none, gpu (NVML's CPUs local to the GPU) or a list such as 0-3
    # (sweep.measure.affinity)
    cpu_affinity: str = "none"

    def __post_init__(self) -> None:
        _number("bench.warmup", self.warmup)
        _number("bench.min_iters", self.min_iters)
        _number("bench.min_seconds", self.min_seconds)
        _number("bench.rounds", self.rounds)
        _number("bench.round", self.round)
        if self.round > self.rounds:
            raise config_error("bench.round", self.round, f"1..bench.rounds={self.rounds}",
                               "leave bench.round to the sweeper")
        _number("bench.telemetry_interval_ms", self.telemetry_interval_ms)
        _number("bench.stable_cv_pct", self.stable_cv_pct)
        self.cpu_affinity = str(self.cpu_affinity)
        if not CPU_SET.fullmatch(self.cpu_affinity):
            raise config_error("bench.cpu_affinity", self.cpu_affinity,
                               "none, gpu (the CPUs local to the job's GPU) or CPU numbers and "
                               "ranges", "e.g. bench.cpu_affinity=gpu, bench.cpu_affinity=0-3, "
                               "or quoted where it holds a comma: 'bench.cpu_affinity=\"0-3,8\"'")


@dataclass
class CheckConfig:
    """Correctness of every job against PyTorch fp32 on `samples` inputs (rounded up to whole
    batches)."""

    enabled: bool = True
    samples: int = 16

    def __post_init__(self) -> None:
        _number("check.samples", self.samples)


@dataclass
class TrackingConfig(Choice):
    """Where results are logged; the URI's precedence is `sweep.tracking.resolve_uri`'s. One
    schema per store, registered by ``@choice``; the YAML files of the `tracking` group (local,
    server) are places of that store. `name` is a class constant, not an option: the tracking
    options are logged as params, and the store is not one a job varies."""

    choices: ClassVar[dict[str, type]] = {}
    impl: ClassVar[str] = "sweep.tracking.mlflow_store:MlflowTracker"
    name: ClassVar[str] = "mlflow"
    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "sweep"


@choice
@dataclass
class MlflowTrackingConfig(TrackingConfig):
    """An MLflow tracking store: a local sqlite file or a server."""

    impl: ClassVar[str] = "sweep.tracking.mlflow_store:MlflowTracker"
    name: ClassVar[str] = "mlflow"


# keys that say how a job is run, not what it measures (a resumed sweep ignores them)
CONTROL_KEYS = ("tracking", "force", "resume", "reuse_dir", "isolation", "timeout_s", "gpus")
# what a re-run into the same folder does with a job that has a result: skip it either way, or
# skip it only when it succeeded (force=true re-runs every job)
RESUME = ("skip_finished", "retry_failed")


@dataclass
class SweepConfig:
    runtime: Any = None  # a RuntimeConfig choice
    model: ModelConfig = field(default_factory=ModelConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pipeline: Any = None  # a PipelineConfig choice (None: serial)
    scenario: Any = None  # a ScenarioConfig choice (None: offline)
    # one side (square) or [height, width]; None: the model's own (job.resolve_resolution)
    resolution: Any = None
    batch: int = 1
    precision: str = "fp32"
    device: str = "auto"
    flags: FlagsConfig = field(default_factory=FlagsConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    tracking: TrackingConfig = field(default_factory=MlflowTrackingConfig)
    cache_dir: str | None = None  # default ~/.cache/sweep
    # how jobs run: inline (in the launcher's process) or each in a fresh process, with a timeout
    isolation: str = "inline"
    timeout_s: float = 0.0  # per job, isolation=process only; 0 = none
    force: bool = False  # re-run jobs whose folder already holds a complete result
    resume: str = "skip_finished"  # or retry_failed: re-run the jobs that failed before
    reuse_dir: bool = False  # run into a folder that holds a different sweep (else refused)
    gpus: list[int] | None = None  # spread jobs over these GPUs, one each (isolation=process)
    fault: str | None = None  # inject a fault (hang, segfault, exit) to test isolation
    fault_at: dict[int, str] = field(default_factory=dict)  # {job number: fault}, chosen jobs

    def __post_init__(self) -> None:
        self.pipeline = self.pipeline or SerialPipelineConfig()
        self.scenario = self.scenario or OfflineScenarioConfig()
        _choice("isolation", self.isolation, ISOLATIONS)
        _choice("resume", self.resume, RESUME)
        _number("timeout_s", self.timeout_s)
        if self.fault is not None:
            _choice("fault", self.fault, FAULTS)
            if self.isolation != "process":
                raise config_error("fault", self.fault, "a fault would take the whole sweep down "
                                   "with isolation=inline", "Add isolation=process.")
        if self.gpus and self.isolation != "process":
            raise config_error("gpus", self.gpus, "each job must see one device, which needs a "
                               "fresh process per job", "Add isolation=process.")
        for key, family in (("runtime", RuntimeConfig), ("pipeline", PipelineConfig),
                            ("scenario", ScenarioConfig)):
            if not isinstance(getattr(self, key), family):
                raise config_error(key, getattr(self, key),
                                   f"allowed values are {choices_of(family)}")
        _number("batch", self.batch)
        if isinstance(self.resolution, int | float) and not isinstance(self.resolution, bool) \
                and self.resolution > MAX_RESOLUTION:
            raise config_error("resolution", self.resolution,
                               f"the input side must be 8..{MAX_RESOLUTION} pixels",
                               "e.g. resolution=224 (resolution=512 for a large input)")
        if isinstance(self.resolution, list | tuple):
            self.resolution = check_resolution_value(self.resolution)
        else:
            _number("resolution", self.resolution)
        _choice("precision", self.precision, PRECISIONS)
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise config_error("device", self.device, "allowed values are auto, cpu, cuda, cuda:N",
                               "e.g. device=cpu")
        if not isinstance(self.pipeline, SerialPipelineConfig) and self.data.name == "synthetic":
            raise config_error(
                "pipeline", self.pipeline.name,
                f"input pipelines need files to read, and data={self.data.name} has none",
                "Use data=imagefolder data.root=<folder of class folders>, or pipeline=serial.")
        if self.pipeline.name == "gpu" and self.device == "cpu":
            raise config_error("pipeline", "gpu", "it decodes on a CUDA device and device=cpu",
                               "Use device=cuda, or pipeline=fast on the CPU.")


RUNTIME_SCHEMAS = RuntimeConfig.choices
PIPELINE_SCHEMAS = PipelineConfig.choices
SCENARIO_SCHEMAS = ScenarioConfig.choices
_CHOSEN = {"runtime": RuntimeConfig, "pipeline": PipelineConfig, "scenario": ScenarioConfig}


def from_container(data: dict[str, Any]) -> SweepConfig:
    """A resolved config (Hydra's, or a job folder's config.yaml) -> SweepConfig, validated as
    Hydra's composition would: each chosen group gets the schema its name selects."""
    from omegaconf import OmegaConf

    data = {k: v for k, v in data.items() if k != "hydra"}
    chosen = {key: data.pop(key, None) or {} for key in _CHOSEN}
    cfg = OmegaConf.merge(OmegaConf.structured(SweepConfig), data)
    for key, family in _CHOSEN.items():
        node = chosen[key]
        name = node.get("name", family.name)
        if name not in family.choices:
            raise config_error(key, name, f"allowed values are {choices_of(family)}",
                               f"e.g. {key}={next(iter(family.choices))}")
        cfg[key] = OmegaConf.merge(OmegaConf.structured(family.choices[name]), node)
    return OmegaConf.to_object(cfg)


def job_values(data: dict[str, Any], job_num: Any) -> dict[str, Any]:
    """A job's resolved values (the composed config without `hydra`) with `fault_at` applied:
    fault_at={3:segfault} gives job 3 its fault."""
    if data.get("fault_at") and job_num in data["fault_at"]:
        data = {**data, "fault": data["fault_at"][job_num]}
    return data


def tracking_of(data: dict[str, Any]) -> TrackingConfig:
    """The tracking part of a resolved config alone: where a job whose config is invalid (so
    that no SweepConfig exists) is still recorded."""
    from omegaconf import OmegaConf

    schema = TrackingConfig.choices[TrackingConfig.name]
    node = OmegaConf.merge(OmegaConf.structured(schema), data.get("tracking") or {})
    return OmegaConf.to_object(node)


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; YAML files list them in their defaults."""
    from omegaconf import OmegaConf

    # sweep/conf/model/{onnx,exported}.yaml: a model file is named by its stem (job and run names)
    OmegaConf.register_new_resolver(
        "sweep_stem", lambda p: str(p).replace("\\", "/").rsplit("/", 1)[-1].split(".")[0]
        if p else "file", replace=True)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=SweepConfig)
    for group, family in _CHOSEN.items():
        for name, schema in family.choices.items():
            cs.store(group=f"schema/{group}", name=name, node=schema)
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/hardware", name="hardware", node=HardwareConfig)
    cs.store(group="schema/data", name="data", node=DataConfig)
    for name, schema in TrackingConfig.choices.items():
        cs.store(group="schema/tracking", name=name, node=schema)
