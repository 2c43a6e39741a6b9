"""One job, as a recipe: resolve the device and hardware, build the model, prepare the runtime,
check its outputs, run the scenarios the config asks for, record the result."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
import traceback
from pathlib import Path

import torch

from sweep import progress
from sweep.accuracy import compare, make_decisive, run_batches, synthetic_images
from sweep.cache import ArtifactCache
from sweep.config import BOUNDS, ModelConfig, SweepConfig, check_resolution_value, size_of
from sweep.env import device_name, environment
from sweep.errors import ConfigError, UnsupportedError, config_error
from sweep.hardware import resolve_hardware
from sweep.measure import affinity
from sweep.measure.flops import count_gflop_on_cpu, count_gflop_per_img
from sweep.measure.memory import free_bytes, reset_gpu_peak
from sweep.measure.timing import time_first_call
from sweep.model_files import OnnxModel, count_onnx_gflop, load_exported, open_onnx
from sweep.models import (
    build_model,
    build_task_model,
    check_resolution,
    make_task_decisive,
    native_resolution,
    task_of_torchvision,
)
from sweep.result import JobResult, flatten, job_name, save_result, write_error, write_samples
from sweep.runtimes import JobContext, Runtime, check_model, check_supported, create_runtime
from sweep.runtimes.base import set_math_mode
from sweep.scenarios import Workload, scenarios_for
from sweep.tasks import Task, get_task, infer_task
from sweep.tasks.detect import CHECK_CONF

log = logging.getLogger(__name__)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={requested} but CUDA is not available here; "
                           "use device=cpu or device=auto")
    return device


def inject_fault(fault: str | None) -> None:
    """`fault=...`: what a crashing or hanging job does, to exercise isolation=process."""
    if fault == "hang":
        while True:
            time.sleep(3600)
    elif fault == "segfault":
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV
    elif fault == "exit":
        os._exit(3)


_NATIVE: dict[tuple, tuple[int, str]] = {}  # the folder's name and the job both ask


def resolve_resolution(cfg: SweepConfig) -> str:
    """`resolution: null` is the model's own input side, set on `cfg` here: 224 or a timm
    model's default config (models.native_resolution), the size a file declares; returns where
    it comes from (the job's info `resolution_from`)."""
    model = cfg.model
    path = Path(str(model.path)).expanduser() if model.path else None
    stat = path.stat() if path is not None and path.is_file() else None
    key = (model.kind, model.name, model.path, stat and (stat.st_size, stat.st_mtime_ns))
    if key not in _NATIVE:
        _NATIVE[key] = _native_resolution(model)
    side, source = _NATIVE[key]
    low, high = BOUNDS["resolution"]
    if not all(low <= s <= high for s in size_of(side)):  # a file's declared size passes the
        raise config_error("resolution", side, f"{source}; the input side must be "  # same bound
                           f"{low:g}..{high:g} pixels", "Set resolution=<side> within it, or "
                           "export the model at a smaller input size.")
    cfg.resolution = check_resolution_value(side)
    return source


def _native_resolution(model: ModelConfig) -> tuple[int | list[int], str]:
    if model.kind == "onnx":
        return open_onnx(model).input.native_resolution(str(model.path))
    if model.kind == "exported":
        return load_exported(model)[1].native_resolution(str(model.path))
    return native_resolution(model)


def run_job(cfg: SweepConfig, job_dir: Path, swept: tuple[str, ...] = ()) -> JobResult:
    """Run one job; any exception becomes a failed result with its reason, never a crash.
    `swept`: the params its sweep varies, which its name shows (result.job_name)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    params = flatten(cfg)
    result = JobResult(job=job_name(params, swept), params=params)
    inject_fault(cfg.fault)
    t0 = time.perf_counter()
    try:
        if cfg.resolution is None:  # called directly: the app resolves it before naming a job
            result.info["resolution_from"] = resolve_resolution(cfg)
            result.params = flatten(cfg)
            result.job = job_name(result.params, swept)
        _build_prepare_and_measure(cfg, job_dir, result)
        result.status = "ok"
    except Exception as e:  # the sweep goes on; the reason is recorded
        result.status = "failed"
        result.error = f"{type(e).__name__}: {e}"
        write_error(job_dir, traceback.format_exc())
        log.error("job %s failed: %s", result.job, result.error)
    result.duration_s = time.perf_counter() - t0
    save_result(result, job_dir)
    return result


def prepare_runtime(cfg: SweepConfig, device: torch.device | None = None
                    ) -> tuple[Runtime, torch.device, torch.Tensor]:
    """The runtime a job of `cfg` times, prepared as run_job prepares it, with its device and one
    batch of the job's synthetic input on it: the one supported way for a probe to build a
    runtime (no output check, scenario or result). The caller closes the runtime."""
    device = device or resolve_device(cfg.device)
    if cfg.resolution is None:
        resolve_resolution(cfg)
    torch.backends.cudnn.benchmark = cfg.flags.cudnn_benchmark
    check_supported(cfg.runtime, device, cfg.precision, cfg.model.kind)
    check_model(cfg.runtime, cfg.model.kind)
    check_resolution(cfg.model, cfg.resolution)
    task = resolve_task(cfg)[0] if cfg.model.kind != "onnx" else "classify"
    model = _load_model(cfg, JobResult(job="probe", params={}), task, decisive=True)
    file_model = isinstance(model, OnnxModel)
    if file_model:
        task = resolve_task(cfg, model)[0]
    if (not cfg.model.weights and cfg.model.kind in ("torchvision", "timm")
            and task == "classify"):  # as run_job's
        make_decisive(model, _inputs(cfg, 16, 1), seed=cfg.model.seed)
    cache = ArtifactCache.open(cfg.cache_dir)
    identity = (model.identity(cfg.model.name) if file_model
                else cache.model_identity(cfg.model, model))
    ctx = JobContext(device=device, precision=cfg.precision, batch=cfg.batch,
                     resolution=cfg.resolution, channels_last=cfg.flags.channels_last,
                     cache=cache, model_identity=identity,
                     input_dtype=model.input.torch_dtype if file_model else None,
                     model_kind=cfg.model.kind, task=task)
    runtime = create_runtime(cfg.runtime, ctx)
    inputs = _inputs(cfg, _check_images(cfg), 0)[: cfg.batch]  # run_job's first batch
    set_math_mode(cfg.precision)
    try:
        runtime.prepare(model, inputs)
    except BaseException:
        runtime.close()
        raise
    return runtime, device, _to_device(runtime, device)(inputs)


def _inputs(cfg: SweepConfig, n: int, stream: int) -> torch.Tensor:
    """`n` synthetic images, reproducible from data.seed (stream: which set)."""
    return synthetic_images(n, cfg.resolution, cfg.data.seed * 1000 + stream)


def resolve_task(cfg: SweepConfig, model: torch.nn.Module | OnnxModel | None = None
                 ) -> tuple[str, str]:
    """The task of the job's model (`model.task`, or what the model says), and how it was
    decided (info `task_from`). An ONNX file's outputs decide with `model.output_format`; a
    torchvision architecture by the module it lives in; timm and .pt2 programs are classifiers.
    A named task the model cannot be read as is a ConfigError naming what it is."""
    m = cfg.model
    if isinstance(model, OnnxModel):
        try:
            return infer_task(model.output_shapes, m.output_format, m.task)
        except ValueError as e:
            raise ConfigError(f"model.path={m.path!r}: {e}. Set model.task (classify|detect|"
                              "segment|raw: raw compares every output numerically) or "
                              "model.output_format (yolo|torchvision) to what the file holds."
                              ) from e
    if m.output_format is not None and m.kind != "onnx":
        raise config_error("model.output_format", m.output_format,
                           f"it says how an ONNX file's outputs are laid out, and model={m.kind} "
                           "builds its model", "Drop model.output_format.")
    implied = (task_of_torchvision(m.name) if m.kind == "torchvision" else None) or "classify"
    why = (f"torchvision's {m.name} is a {implied} model" if m.kind == "torchvision"
           else f"model={m.kind} builds classifiers")
    if m.task in (None, implied):
        return implied, why
    if m.task == "raw":
        return "raw", f"model.task=raw ({why}; every output compared numerically)"
    raise config_error("model.task", m.task, why,
                       f"Use model.task={implied} (or null), or model.task=raw.")


def make_task(cfg: SweepConfig, task: str, check: bool = False) -> Task:
    """The job's Task: its post-processing options from `postprocess`; `check`: the correctness
    check's, whose score threshold is low enough that random weights give boxes."""
    if task == "classify":
        return get_task(task, precision=cfg.precision)
    if task == "detect":
        pp = cfg.postprocess
        return get_task(task, output_format=cfg.model.output_format or "torchvision",
                        conf=CHECK_CONF if check else pp.conf, iou=pp.iou, max_det=pp.max_det)
    return get_task(task)


def _load_model(cfg: SweepConfig, result: JobResult, task: str = "classify",
                decisive: bool = False) -> torch.nn.Module | OnnxModel:
    """The model of `cfg.model`: built by name, or read from the user's file (whose declared
    input must fit the job's batch and resolution). A torchvision detector or segmenter with
    random weights is made decisive here (`decisive`), on inputs like the job's."""
    if cfg.model.kind == "onnx":
        model = open_onnx(cfg.model)
        model.input.check_job(cfg.model.path, cfg.batch, cfg.resolution)
        result.info.update(model.info())
        return model
    if cfg.model.kind == "exported":
        module, spec, info = load_exported(cfg.model)
        spec.check_job(cfg.model.path, cfg.batch, cfg.resolution)
        result.info.update(info)
        return module
    if cfg.model.kind == "torchvision" and task_of_torchvision(cfg.model.name) in ("detect",
                                                                                 "segment"):
        m = cfg.model
        model = build_task_model(
            m.name, seed=m.seed, weights=m.weights, resolution=size_of(cfg.resolution),
            num_classes=None if m.num_classes == 1000 else m.num_classes,  # 1000: unset
            score_thresh=None if m.weights else CHECK_CONF)
        if decisive and not m.weights:
            make_task_decisive(model, _inputs(cfg, 8, 1))
        return model
    return build_model(cfg.model)


def _check_runtime_task(cfg: SweepConfig, task: str) -> None:
    """A runtime that cannot run a torchvision detector's Python control flow (data-dependent
    shapes, per-image loops) fails the job with that reason."""
    if (task == "detect" and cfg.model.kind == "torchvision"
            and cfg.runtime.name in ("compile", "trt")):
        raise UnsupportedError(
            f"runtime={cfg.runtime.name} cannot run torchvision's {cfg.model.name}: its "
            "forward has Python control flow and data-dependent shapes (score threshold, NMS, "
            "a loop over images) that torch.compile and Torch-TensorRT do not capture as one "
            "graph; use runtime=torch, onnx or openvino.")


def _reference(model: torch.nn.Module | OnnxModel, inputs: torch.Tensor, batch: int,
               device: torch.device) -> torch.Tensor:
    """PyTorch fp32 logits (TF32 off) on the job's device, from a copy of the model; for an ONNX
    file, ONNX Runtime's CPU provider on the same file."""
    if isinstance(model, OnnxModel):
        return model.reference(inputs, batch).to(device)
    set_math_mode("fp32")
    ref_model = copy.deepcopy(model).to(device)
    with torch.inference_mode():
        out = run_batches(ref_model, inputs, batch, lambda t: t.to(device))
    del ref_model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _to_device(runtime: Runtime, device: torch.device):
    def to_device(t: torch.Tensor) -> torch.Tensor:
        x = t.to(device, runtime.input_dtype)
        return x.contiguous(memory_format=runtime.input_memory_format)

    return to_device


def predictions(fn, inputs: torch.Tensor, batch: int, to_device, task: Task) -> list:
    """`task`'s host predictions of `fn` over `inputs` in chunks of `batch`: one entry per image
    (detect, segment) or, for raw, each output concatenated over the chunks."""
    chunks = [task.to_host(task.postprocess(fn(to_device(x)))) for x in inputs.split(batch)]
    if task.name == "raw":
        return [torch.cat([c[i].float() for c in chunks]) for i in range(len(chunks[0]))]
    return [p for c in chunks for p in c]


def _task_reference(model: torch.nn.Module | OnnxModel, inputs: torch.Tensor, batch: int,
                    device: torch.device, task: Task) -> list:
    """The fp32 reference's predictions (as `_reference`), post-processed by the check's task."""
    if isinstance(model, OnnxModel):
        return predictions(model.run_all, inputs, batch, lambda t: t, task)
    set_math_mode("fp32")
    ref_model = copy.deepcopy(model).to(device)
    with torch.inference_mode():
        out = predictions(ref_model, inputs, batch, lambda t: t.to(device), task)
    del ref_model
    return out


def _task_check(cfg: SweepConfig, runtime: Runtime, task: Task, reference: list,
                inputs: torch.Tensor, to_device, result: JobResult) -> None:
    """A task's outputs against the reference's, after the same post-processing; a job beyond
    the task's tolerance is marked, as a classifier's is."""
    with torch.inference_mode():
        got = predictions(runtime.infer, inputs, cfg.batch, to_device, task)
    metrics = task.compare(got, reference)
    ok, reason = task.is_correct(metrics, cfg.precision)
    result.metrics.update(metrics, check_samples=float(len(inputs)), correct=float(ok))
    counted = {"detect": "boxes_compared", "segment": "pixels_compared",
               "raw": "outputs_compared"}.get(task.name)
    if counted:
        reason += f" ({counted}={metrics.get(counted, 0):.0f} over {len(inputs)} images)"
    result.info["correctness"] = reason
    if not ok:
        log.warning("job %s: outputs differ from the fp32 reference: %s", result.job, reason)


def _check(cfg: SweepConfig, runtime: Runtime, reference: torch.Tensor, inputs: torch.Tensor,
           to_device, result: JobResult) -> None:
    """Outputs against PyTorch fp32 on the same inputs; a job beyond tolerance is marked."""
    check = compare(reference, run_batches(runtime.infer, inputs, cfg.batch, to_device),
                    cfg.precision)
    result.metrics.update(check.metrics())
    result.info["correctness"] = check.reason
    if not check.passed:
        log.warning("job %s: outputs differ from PyTorch fp32: %s", result.job, check.reason)


def _count_gflop(cfg: SweepConfig, model: torch.nn.Module, task: str,
                 result: JobResult) -> float:
    """GFLOP per image counted by torch: on the meta device where the model runs there, else
    (a detector's data-dependent forward) on one real image on the CPU; which, in info."""
    try:
        gflop = count_gflop_per_img(model, cfg.resolution,
                                    cfg.batch if cfg.model.kind == "exported" else 1)
        if task != "classify":
            result.info["flops_counted"] = "torch FlopCounterMode on the meta device"
        return gflop
    except (RuntimeError, NotImplementedError) as e:
        if task == "classify":
            raise RuntimeError(f"resolution={cfg.resolution} does not work with "
                               f"model.name={cfg.model.name}: {e}") from e
    gflop = count_gflop_on_cpu(model, _inputs(cfg, 1, 2))
    result.info["flops_counted"] = ("torch FlopCounterMode on one image on the CPU (the meta "
                                    "device cannot run its data-dependent forward): the "
                                    "boxes of random weights at the check's score threshold")
    return gflop


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_input_fits(cfg: SweepConfig, device: torch.device) -> None:
    """Refuse, before anything is allocated, a job whose fp32 inputs alone exceed the memory
    free on the host (the check's images) or on the GPU (one batch), rather than let the
    allocator fail with its own message. What the model's activations add is left to the run."""
    per_image = 3 * math.prod(size_of(cfg.resolution)) * 4
    images = _check_images(cfg)
    places = [("the host", torch.device("cpu"), images)]
    if device.type == "cuda":
        places.append((str(device), device, cfg.batch))
    for where, dev, n in places:
        free = free_bytes(dev)
        if free is None or n * per_image <= free:
            continue
        fits = free // per_image
        hint = (f"Use a smaller batch or resolution (the inputs alone allow batch={fits} here, "
                "and the model's activations need more)." if fits
                else "Use a smaller resolution.")
        raise config_error("batch", cfg.batch, f"at resolution={cfg.resolution} its {n} input "
                           f"image(s) need {_gib(n * per_image)}, more than the {_gib(free)} "
                           f"free on {where}", hint)


def _check_images(cfg: SweepConfig) -> int:
    """How many images a job makes for its output check: whole batches, at least
    check.samples."""
    return cfg.batch * max(1, math.ceil(cfg.check.samples / cfg.batch))


def _build_prepare_and_measure(cfg: SweepConfig, job_dir: Path, result: JobResult) -> None:
    """Build the model, prepare and check the runtime, run the scenarios: into `result`."""
    device = resolve_device(cfg.device)
    # the cached environment plus what this job chose (tags: A/B of the autotuner)
    result.env = {**environment(str(device)),
                  "cudnn_benchmark": str(cfg.flags.cudnn_benchmark).lower()}
    torch.backends.cudnn.benchmark = cfg.flags.cudnn_benchmark  # per job: inline jobs share it
    hw = resolve_hardware(cfg.hardware, device_name(str(device)), device.type == "cuda")
    result.info.update(hardware_used=hw.name, hardware_description=hw.description,
                       device_used=str(device))
    check_supported(cfg.runtime, device, cfg.precision, cfg.model.kind)  # before any work
    check_model(cfg.runtime, cfg.model.kind)
    check_resolution(cfg.model, cfg.resolution)
    check_input_fits(cfg, device)
    # the timed span's CPUs, resolved before any work so a wrong set fails at once
    cpus, result.info["cpu_affinity"] = affinity.resolve(cfg.bench.cpu_affinity, device)
    task_name = "classify"
    if cfg.model.kind != "onnx":  # a file's task is read from its outputs, once it is open
        task_name, result.info["task_from"] = resolve_task(cfg)
        _check_runtime_task(cfg, task_name)
    with progress.phase(result.job, "building"):  # the model and its fp32 reference outputs
        model = _load_model(cfg, result, task_name, decisive=True)
        file_model = isinstance(model, OnnxModel)
        if file_model:
            task_name, result.info["task_from"] = resolve_task(cfg, model)
            gflop, unresolved = count_onnx_gflop(model, cfg.resolution)
            result.info["flops_unresolved_nodes"] = str(unresolved)
            if task_name != "classify":
                result.info["flops_counted"] = ("the ONNX graph's Conv, MatMul and Gemm nodes "
                                                "(sweep.model_files)")
        else:
            gflop = _count_gflop(cfg, model, task_name, result)
        inputs = _inputs(cfg, _check_images(cfg), 0)
        if (not cfg.model.weights and cfg.model.kind in ("torchvision", "timm")
                and task_name == "classify"):  # not a file; other tasks: made in _load_model
            make_decisive(model, _inputs(cfg, 16, 1), seed=cfg.model.seed)
        task = make_task(cfg, task_name)
        check_task = make_task(cfg, task_name, check=True)
        cache = ArtifactCache.open(cfg.cache_dir)
        identity = (model.identity(cfg.model.name) if file_model
                    else cache.model_identity(cfg.model, model))  # weights as exported
        ctx = JobContext(device=device, precision=cfg.precision, batch=cfg.batch,
                         resolution=cfg.resolution, channels_last=cfg.flags.channels_last,
                         cache=cache, model_identity=identity,
                         input_dtype=model.input.torch_dtype if file_model else None,
                         model_kind=cfg.model.kind, task=task_name)
        runtime = create_runtime(cfg.runtime, ctx)
        reference = None
        if cfg.check.enabled:
            reference = (_reference(model, inputs, cfg.batch, device) if task_name == "classify"
                         else _task_reference(model, inputs, cfg.batch, device, check_task))
    set_math_mode(cfg.precision)
    try:
        reset_gpu_peak(device)
        with progress.phase(result.job, runtime.prepare_phase):
            prepared = runtime.prepare(model, inputs[: cfg.batch])
        result.info.update(cache=prepared.cache, **prepared.info)
        to_device = _to_device(runtime, device)
        x = to_device(inputs[: cfg.batch])
        with progress.phase(result.job, "checking"):
            first_ms = time_first_call(lambda: runtime.infer(x), device)
            if reference is not None and task_name == "classify":
                _check(cfg, runtime, reference, inputs, to_device, result)
            elif reference is not None:
                _task_check(cfg, runtime, check_task, reference, inputs, to_device, result)
        result.metrics.update(export_s=prepared.export_s, first_infer_ms=first_ms,
                              gflop_per_img=gflop)
        work = Workload(cfg=cfg, device=device, runtime=runtime, x=x, gflop_per_img=gflop,
                        hardware=hw, task=task)
        samples: dict = {}
        with affinity.pinned(cpus):
            for scenario in scenarios_for(cfg):
                with progress.phase(result.job, f"timing ({scenario.name})"):
                    measured = scenario.run(work)
                result.metrics.update(measured.metrics)
                result.info.update(measured.info)
                if measured.samples is not None:
                    samples.update(measured.samples)
                    write_samples(job_dir, samples)  # what is measured so far survives a failure
    finally:
        runtime.close()
