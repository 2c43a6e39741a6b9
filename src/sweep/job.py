"""One job, start to finish: build, prepare, check, time, count, record."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from sweep.accuracy import compare, make_decisive, run_batches, synthetic_images
from sweep.config import SweepConfig, from_container
from sweep.env import device_name, environment
from sweep.hardware import peak_tflops, resolve_hardware
from sweep.measure.flops import count_gflop_per_img
from sweep.measure.memory import gpu_mem_peak_mb, gpu_mem_used_mb, host_rss_peak_mb, reset_gpu_peak
from sweep.measure.stats import latency_stats
from sweep.measure.timing import gpu_only_ms, time_calls, time_first_call
from sweep.models import build_model, check_resolution
from sweep.result import (
    SAMPLES_FILE,
    JobResult,
    flatten,
    save_result,
    write_json_atomic,
)
from sweep.runtimes.base import set_math_mode

log = logging.getLogger(__name__)
BUSY_GPU_BOUND = 85.0  # gpu_busy_pct from which a job counts as bound by the GPU

def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={requested} but CUDA is not available here; use device=cpu or device=auto")
    return device


def run_from_container(data: dict[str, Any], job_dir: Path) -> JobResult:
    """Validate a resolved config and run it; a bad value is a failed job with its reason."""
    try:
        cfg = from_container(data)
    except Exception as e:
        result = JobResult(job=job_dir.name.split("_", 1)[-1], status="failed",
                           error=f"{type(e).__name__}: {e}", params=flatten(data))
        save_result(result, job_dir)
        return result
    return run_job(cfg, job_dir)


def _inject_fault(fault: str | None) -> None:
    """`fault=...`: what a crashing or hanging job does, to exercise isolation=process."""
    if fault == "hang":
        while True:
            time.sleep(3600)
    elif fault == "segfault":
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV
    elif fault == "exit":
        os._exit(3)


def run_job(cfg: SweepConfig, job_dir: Path) -> JobResult:
    """Run one job; any exception becomes a failed result with its reason, never a crash."""
    job_dir.mkdir(parents=True, exist_ok=True)
    result = JobResult(job=cfg.job_name, params=flatten(cfg))
    _inject_fault(cfg.fault)
    t0 = time.perf_counter()
    try:
        _measure(cfg, job_dir, result)
        result.status = "ok"
    except Exception as e:  # the sweep goes on; the reason is recorded
        result.status = "failed"
        result.error = f"{type(e).__name__}: {e}"
        (job_dir / "error.txt").write_text(traceback.format_exc())
        log.error("job %s failed: %s", result.job, result.error)
    result.duration_s = time.perf_counter() - t0
    save_result(result, job_dir)
    return result


def _inputs(cfg: SweepConfig, n: int, stream: int) -> torch.Tensor:
    """`n` synthetic images, reproducible from data.seed (stream: which set)."""
    return synthetic_images(n, cfg.resolution, cfg.data.seed * 1000 + stream)


def _reference(model: torch.nn.Module, inputs: torch.Tensor, batch: int,
               device: torch.device) -> torch.Tensor:
    """PyTorch fp32 logits (TF32 off) on the job's device, from a copy of the model."""
    set_math_mode("fp32")
    ref_model = copy.deepcopy(model).to(device)
    with torch.inference_mode():
        out = run_batches(ref_model, inputs, batch, lambda t: t.to(device))
    del ref_model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _measure(cfg: SweepConfig, job_dir: Path, result: JobResult) -> None:
    from sweep.cache import ArtifactCache
    from sweep.runtimes import JobContext, create_runtime
    device = resolve_device(cfg.device)
    result.env = environment(str(device))
    hw = resolve_hardware(cfg.hardware, device_name(str(device)), device.type == "cuda")
    result.info.update(hardware_used=hw.name, hardware_description=hw.description,
                       device_used=str(device))

    check_resolution(cfg.model, cfg.resolution)
    model = build_model(cfg.model)
    try:
        gflop = count_gflop_per_img(model, cfg.resolution)
    except RuntimeError as e:
        raise RuntimeError(f"resolution={cfg.resolution} does not work with model.name={cfg.model.name}: {e}") from e
    cache = ArtifactCache.open(cfg.cache_dir)
    ctx = JobContext(device=device, precision=cfg.precision, batch=cfg.batch,
                     resolution=cfg.resolution, channels_last=cfg.flags.channels_last, cache=cache)
    runtime = create_runtime(cfg.runtime, ctx)  # fails at once on an impossible precision
    inputs = _inputs(cfg, cfg.batch * max(1, math.ceil(cfg.check.samples / cfg.batch)), 0)
    if not cfg.model.weights:
        make_decisive(model, _inputs(cfg, 16, 1), seed=cfg.model.seed)
    ctx.cache_key_parts = cache.model_identity(cfg.model, model)  # the weights as exported
    reference = _reference(model, inputs, cfg.batch, device) if cfg.check.enabled else None
    set_math_mode(cfg.precision)
    try:
        reset_gpu_peak(device)
        prepared = runtime.prepare(model, inputs[: cfg.batch])
        result.info.update(cache=prepared.cache, **prepared.info)

        def to_device(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, runtime.input_dtype).contiguous(memory_format=runtime.input_memory_format)

        x = to_device(inputs[: cfg.batch])
        first_ms = time_first_call(lambda: runtime.infer(x), device)
        metrics: dict[str, float] = {}
        if reference is not None:
            check = compare(reference, run_batches(runtime.infer, inputs, cfg.batch, to_device),
                            cfg.precision)
            metrics.update(check.metrics())
            result.info["correctness"] = check.reason
            if not check.passed:
                log.warning("job %s: outputs differ from PyTorch fp32: %s", result.job, check.reason)
        t_bench = time.perf_counter()
        timing = time_calls(lambda: runtime.infer(x), device, cfg.bench.warmup,
                            cfg.bench.min_iters, cfg.bench.min_seconds)
        result.info["bench_s"] = time.perf_counter() - t_bench  # warmup + timed calls
        metrics.update(latency_stats(timing.samples_ms, cfg.batch, timing.span_s))
        gpu_ms = gpu_only_ms(lambda: runtime.infer(x), device)
        if gpu_ms is not None:  # how much of a call's time the GPU is working
            busy = min(100.0, 100 * gpu_ms / metrics["infer_ms_p50"])
            metrics.update(gpu_ms_per_call=gpu_ms, gpu_busy_pct=busy)
            result.info["bound"] = "GPU" if busy >= BUSY_GPU_BOUND else (
                f"host: the GPU works {busy:.0f}% of a call, the rest it waits for kernel "
                "launches, so this figure follows the CPU's speed; CUDA graphs remove most of "
                "that (runtime=compile runtime.mode=reduce-overhead, or runtime=onnx "
                "runtime.cuda_graph=true)")
        metrics.update(export_s=prepared.export_s, first_infer_ms=first_ms, gflop_per_img=gflop)
        metrics["tflops"] = gflop * metrics["fps"] / 1e3
        peak = peak_tflops(hw, cfg.precision)
        result.info["util_basis"] = (
            f"{cfg.precision} peak of {hw.name} ({peak} {'TOPS' if cfg.precision == 'int8' else 'TFLOPS'})"
            if peak else f"no {cfg.precision} peak known for hardware={hw.name}; util_pct not reported")
        if peak:
            metrics.update(tflops_peak=peak, util_pct=100 * metrics["tflops"] / peak)
        metrics["host_rss_peak_mb"] = host_rss_peak_mb()
        if device.type == "cuda":
            metrics["gpu_mem_peak_mb"] = gpu_mem_peak_mb(device)
            metrics["gpu_mem_used_mb"] = gpu_mem_used_mb(device)
        result.metrics.update(metrics)
        write_json_atomic(job_dir / SAMPLES_FILE, {"unit": "ms per batch", "batch": cfg.batch,
                                                   "samples_ms": timing.samples_ms})
        if cfg.data.name == "imagefolder":  # files -> decode -> ... -> top-1, through the pipeline
            from sweep.pipelines import measure_end_to_end

            e2e_metrics, e2e_info = measure_end_to_end(cfg, runtime, device)
            result.metrics.update(e2e_metrics)
            result.info.update(e2e_info)
    finally:
        runtime.close()
