"""Pure inference, offline: one batch of synthetic inputs, already on the device, called back to
back. Per-call latency percentiles, throughput, how busy the GPU is, achieved TFLOPS and
utilisation against the hardware's peak, and memory."""

from __future__ import annotations

import time

from sweep.hardware import peak_tflops
from sweep.measure.memory import gpu_mem_peak_mb, gpu_mem_used_mb, host_rss_peak_mb
from sweep.measure.stats import latency_stats
from sweep.measure.telemetry import job_telemetry
from sweep.measure.timing import gpu_only_ms, time_calls
from sweep.scenarios.base import Measurement, Scenario, Workload

BUSY_GPU_BOUND = 85.0  # gpu_busy_pct from which a job counts as bound by the GPU
HOST_BOUND = (
    "host: the GPU works {busy:.0f}% of a call, the rest it waits for kernel launches, so this "
    "figure follows the CPU's speed; CUDA graphs remove most of that (runtime.cuda_graph=true "
    "with runtime=torch, compile or onnx, or runtime=compile runtime.mode=reduce-overhead)")


CLOCK_RANGE_PCT = 5.0  # an SM clock range wider than this share of its mean is drift


CPU_ADVICE = ("quiet the host (other processes share its cores), pin the timed span to idle "
              "cores (e.g. bench.cpu_affinity=0-3), or measure in rounds (bench.rounds=3)")
GPU_ADVICE = ("lock the GPU clocks (nvidia-smi -lgc), use CUDA graphs, quiet the host, or "
              "measure in rounds (bench.rounds=3)")


def stability_notes(m: dict[str, float], info: dict, cv_limit_pct: float,
                    device_type: str = "cuda") -> list[str]:
    """What makes this job's figure unsteady, each with what to do about it on its device (as
    trtexec advises): a high timing CV, a wide SM clock range, a throttle reason seen."""
    notes = []
    cv = m.get("infer_cv_pct")
    if cv is not None and cv > cv_limit_pct:
        advice = GPU_ADVICE if device_type == "cuda" else CPU_ADVICE
        notes.append(f"timing CV {cv:.1f}% > {cv_limit_pct:g}%: {advice}")
    low, high, mean = (m.get(k) for k in ("gpu_sm_clock_mhz_min", "gpu_sm_clock_mhz_max",
                                          "gpu_sm_clock_mhz"))
    if low is not None and high is not None and mean:
        spread = 100 * (high - low) / mean
        if spread > CLOCK_RANGE_PCT:
            notes.append(f"SM clock ranged {low:.0f}-{high:.0f} MHz ({spread:.0f}% of its mean): "
                         "lock the clocks (nvidia-smi -lgc) or measure in rounds")
    if info.get("throttle"):
        notes.append(f"throttled ({', '.join(info['throttle'])}): the figure is below what "
                     "this GPU gives unthrottled; check cooling and the power limit")
    return notes


class InferenceScenario(Scenario):
    name = "inference"

    def run(self, work: Workload) -> Measurement:
        cfg, device, runtime, x = work.cfg, work.device, work.runtime, work.x
        out = Measurement()
        t_bench = time.perf_counter()
        tel = job_telemetry(cfg, device)
        timing = time_calls(lambda: runtime.infer(x), device, cfg.bench.warmup,
                            cfg.bench.min_iters, cfg.bench.min_seconds, span=tel)
        out.info["bench_s"] = time.perf_counter() - t_bench  # warmup + timed calls
        m = out.metrics
        m.update(latency_stats(timing.samples_ms, cfg.batch, timing.span_s))
        measured, facts = tel.result(timing.iters * cfg.batch)
        m.update(measured)
        out.info.update(facts)
        if notes := stability_notes(m, out.info, cfg.bench.stable_cv_pct, device.type):
            out.info["stability"] = notes
        gpu_ms = gpu_only_ms(lambda: runtime.infer(x), device)
        if gpu_ms is not None:  # how much of a call's time the GPU is working
            busy = min(100.0, 100 * gpu_ms / m["infer_ms_p50"])
            m.update(gpu_ms_per_call=gpu_ms, gpu_busy_pct=busy)
            out.info["bound"] = "GPU" if busy >= BUSY_GPU_BOUND else HOST_BOUND.format(busy=busy)
        m["tflops"] = work.gflop_per_img * m["fps"] / 1e3
        out.info["util_basis"] = self._utilisation(work, m)
        m["host_rss_peak_mb"] = host_rss_peak_mb()
        if device.type == "cuda":
            m["gpu_mem_peak_mb"] = gpu_mem_peak_mb(device)
            m["gpu_mem_used_mb"] = gpu_mem_used_mb(device)
        out.samples = {"unit": "ms per batch", "batch": cfg.batch,
                       "samples_ms": timing.samples_ms}
        return out

    @staticmethod
    def _utilisation(work: Workload, m: dict[str, float]) -> str:
        """Adds tflops_peak and util_pct where the peak is known; says what they are against."""
        hw, precision = work.hardware, work.cfg.precision
        peak = peak_tflops(hw, precision)
        if not peak:
            return f"no {precision} peak known for hardware={hw.name}; util_pct not reported"
        m.update(tflops_peak=peak, util_pct=100 * m["tflops"] / peak)
        unit = "TOPS" if precision == "int8" else "TFLOPS"
        return f"{precision} peak of {hw.name} ({peak} {unit})"
