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
from sweep.config import BOUNDS, ModelConfig, SweepConfig
from sweep.env import device_name, environment
from sweep.errors import config_error
from sweep.hardware import resolve_hardware
from sweep.measure import affinity
from sweep.measure.flops import count_gflop_per_img
from sweep.measure.memory import free_bytes, reset_gpu_peak
from sweep.measure.timing import time_first_call
from sweep.model_files import OnnxModel, count_onnx_gflop, load_exported, open_onnx
from sweep.models import build_model, check_resolution, native_resolution
from sweep.result import JobResult, flatten, job_name, save_result, write_error, write_samples
from sweep.runtimes import JobContext, Runtime, check_model, check_supported, create_runtime
from sweep.runtimes.base import set_math_mode
from sweep.scenarios import Workload, scenarios_for

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
    if not low <= side <= high:  # a file's declared size passes the same bound as a typed one
        raise config_error("resolution", side, f"{source}; the input side must be "
                           f"{low:g}..{high:g} pixels", "Set resolution=<side> within it, or "
                           "export the model at a smaller input size.")
    cfg.resolution = side
    return source


def _native_resolution(model: ModelConfig) -> tuple[int, str]:
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
    model = _load_model(cfg, JobResult(job="probe", params={}))
    file_model = isinstance(model, OnnxModel)
    if not cfg.model.weights and cfg.model.kind in ("torchvision", "timm"):  # as run_job's
        make_decisive(model, _inputs(cfg, 16, 1), seed=cfg.model.seed)
    cache = ArtifactCache.open(cfg.cache_dir)
    identity = (model.identity(cfg.model.name) if file_model
                else cache.model_identity(cfg.model, model))
    ctx = JobContext(device=device, precision=cfg.precision, batch=cfg.batch,
                     resolution=cfg.resolution, channels_last=cfg.flags.channels_last,
                     cache=cache, model_identity=identity,
                     input_dtype=model.input.torch_dtype if file_model else None,
                     model_kind=cfg.model.kind)
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


def _load_model(cfg: SweepConfig, result: JobResult) -> torch.nn.Module | OnnxModel:
    """The model of `cfg.model`: built by name, or read from the user's file (whose declared
    input must fit the job's batch and resolution)."""
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
    return build_model(cfg.model)


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


def _check(cfg: SweepConfig, runtime: Runtime, reference: torch.Tensor, inputs: torch.Tensor,
           to_device, result: JobResult) -> None:
    """Outputs against PyTorch fp32 on the same inputs; a job beyond tolerance is marked."""
    check = compare(reference, run_batches(runtime.infer, inputs, cfg.batch, to_device),
                    cfg.precision)
    result.metrics.update(check.metrics())
    result.info["correctness"] = check.reason
    if not check.passed:
        log.warning("job %s: outputs differ from PyTorch fp32: %s", result.job, check.reason)


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_input_fits(cfg: SweepConfig, device: torch.device) -> None:
    """Refuse, before anything is allocated, a job whose fp32 inputs alone exceed the memory
    free on the host (the check's images) or on the GPU (one batch), rather than let the
    allocator fail with its own message. What the model's activations add is left to the run."""
    per_image = 3 * cfg.resolution**2 * 4
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
    with progress.phase(result.job, "building"):  # the model and its fp32 reference outputs
        model = _load_model(cfg, result)
        file_model = isinstance(model, OnnxModel)
        if file_model:
            gflop, unresolved = count_onnx_gflop(model, cfg.resolution)
            result.info["flops_unresolved_nodes"] = str(unresolved)
        else:
            try:
                gflop = count_gflop_per_img(model, cfg.resolution,
                                            cfg.batch if cfg.model.kind == "exported" else 1)
            except RuntimeError as e:
                raise RuntimeError(f"resolution={cfg.resolution} does not work with "
                                   f"model.name={cfg.model.name}: {e}") from e
        inputs = _inputs(cfg, _check_images(cfg), 0)
        if not cfg.model.weights and cfg.model.kind in ("torchvision", "timm"):  # not a file
            make_decisive(model, _inputs(cfg, 16, 1), seed=cfg.model.seed)
        cache = ArtifactCache.open(cfg.cache_dir)
        identity = (model.identity(cfg.model.name) if file_model
                    else cache.model_identity(cfg.model, model))  # weights as exported
        ctx = JobContext(device=device, precision=cfg.precision, batch=cfg.batch,
                         resolution=cfg.resolution, channels_last=cfg.flags.channels_last,
                         cache=cache, model_identity=identity,
                         input_dtype=model.input.torch_dtype if file_model else None,
                         model_kind=cfg.model.kind)
        runtime = create_runtime(cfg.runtime, ctx)
        reference = _reference(model, inputs, cfg.batch, device) if cfg.check.enabled else None
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
            if reference is not None:
                _check(cfg, runtime, reference, inputs, to_device, result)
        result.metrics.update(export_s=prepared.export_s, first_infer_ms=first_ms,
                              gflop_per_img=gflop)
        work = Workload(cfg=cfg, device=device, runtime=runtime, x=x, gflop_per_img=gflop,
                        hardware=hw)
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
