"""One job, start to finish: build, prepare, check, time, count, record."""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sweep.config import SweepConfig
from sweep.env import device_name, environment
from sweep.hardware import peak_tflops, resolve_hardware
from sweep.measure.flops import count_gflop_per_img
from sweep.measure.memory import gpu_mem_peak_mb, gpu_mem_used_mb, host_rss_peak_mb, reset_gpu_peak
from sweep.measure.stats import latency_stats
from sweep.measure.timing import time_calls, time_first_call
from sweep.models import build_model, check_resolution

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
SAMPLES_FILE = "samples.json"


@dataclass
class JobResult:
    """Everything a job reports; written to result.json and logged to MLflow."""

    job: str
    status: str = "running"  # ok | failed
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # non-numeric facts: cache hit, peak basis
    env: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"runtime": "onnx", "runtime.opset": 18, ...}; a group's `name` is the
    group itself, so the MLflow columns read runtime=onnx, model=resnet18."""
    if hasattr(obj, "__dataclass_fields__"):
        obj = asdict(obj)
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and key not in ("peak_tflops",):
            out.update(flatten(value, name))
        elif key == "name" and prefix:
            out[prefix] = value
        elif key in ("match", "peak_tflops", "source", "description"):
            continue  # hardware datasheet details: in info, not params
        else:
            out[name] = value
    return out


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={requested} but CUDA is not available here; use device=cpu or device=auto")
    return device


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary name and rename: a killed job never leaves a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def run_job(cfg: SweepConfig, job_dir: Path) -> JobResult:
    """Run one job; any exception becomes a failed result with its reason, never a crash."""
    job_dir.mkdir(parents=True, exist_ok=True)
    result = JobResult(job=cfg.job_name, params=flatten(cfg))
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
    write_json_atomic(job_dir / RESULT_FILE, result.to_json())
    return result


def _measure(cfg: SweepConfig, job_dir: Path, result: JobResult) -> None:
    from sweep.cache import ArtifactCache
    from sweep.runtimes import JobContext, create_runtime
    from sweep.runtimes.base import set_math_mode

    device = resolve_device(cfg.device)
    result.env = environment(str(device))
    hw = resolve_hardware(cfg.hardware, device_name(str(device)), device.type == "cuda")
    result.info.update(hardware=hw.name, hardware_description=hw.description, device=str(device))

    check_resolution(cfg.model, cfg.resolution)
    model = build_model(cfg.model)
    try:
        gflop = count_gflop_per_img(model, cfg.resolution)
    except RuntimeError as e:
        raise RuntimeError(f"resolution={cfg.resolution} does not work with model.name={cfg.model.name}: {e}") from e
    set_math_mode(cfg.precision)
    cache = ArtifactCache.open(cfg.cache_dir)
    ctx = JobContext(device=device, precision=cfg.precision, batch=cfg.batch,
                     resolution=cfg.resolution, channels_last=cfg.flags.channels_last, cache=cache,
                     cache_key_parts=cache.model_identity(cfg.model))
    runtime = create_runtime(cfg.runtime, ctx)
    gen = torch.Generator().manual_seed(cfg.data.seed)
    x_cpu = torch.randn(cfg.batch, 3, cfg.resolution, cfg.resolution, generator=gen)
    try:
        reset_gpu_peak(device)
        prepared = runtime.prepare(model, x_cpu)
        result.info.update(cache=prepared.cache, **prepared.info)
        x = x_cpu.to(device, runtime.input_dtype).contiguous(memory_format=runtime.input_memory_format)
        first_ms = time_first_call(lambda: runtime.infer(x), device)
        timing = time_calls(lambda: runtime.infer(x), device, cfg.bench.warmup,
                            cfg.bench.min_iters, cfg.bench.min_seconds)
        metrics = latency_stats(timing.samples_ms, cfg.batch, timing.span_s)
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
    finally:
        runtime.close()
