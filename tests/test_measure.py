"""Statistics, FLOP counting and hardware resolution."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torchvision

from sweep.config import HardwareConfig
from sweep.hardware import known_hardware, resolve_hardware
from sweep.measure.flops import count_gflop_per_img
from sweep.measure.stats import latency_stats
from sweep.measure.timing import time_calls


def test_latency_stats_match_numpy():
    rng = np.random.default_rng(0)
    samples = list(rng.normal(10.0, 1.0, 200))
    s = latency_stats(samples, batch=4, span_s=2.5)
    for q in (50, 90, 99):
        assert math.isclose(s[f"infer_ms_p{q}"], np.percentile(samples, q))
    assert math.isclose(s["infer_ms_per_img"], np.mean(samples) / 4)
    assert s["infer_ms_per_img_ci95_low"] < np.mean(samples) / 4 < s["infer_ms_per_img_ci95_high"]
    half = (s["infer_ms_per_img_ci95_high"] - s["infer_ms_per_img_ci95_low"]) / 2 * 4
    assert math.isclose(half, 1.96 * np.std(samples, ddof=1) / math.sqrt(200), rel_tol=0.01)
    assert math.isclose(s["infer_cv_pct"], 100 * np.std(samples, ddof=1) / np.mean(samples))
    assert math.isclose(s["fps"], 200 * 4 / 2.5)


def test_timing_reaches_both_minimums():
    calls = []
    t = time_calls(lambda: calls.append(1), torch.device("cpu"), warmup=2, min_iters=5,
                   min_seconds=0.05)
    assert t.iters >= 5 and t.span_s >= 0.05 and len(calls) == t.iters + 2


def test_flops_match_the_published_counts():
    # ANCHORS.md: resnet18 3.63 GFLOP at 224, resnet50 10.68 at 256 (2 FLOPs per multiply-add)
    assert math.isclose(count_gflop_per_img(torchvision.models.resnet18(), 224), 3.63, rel_tol=0.01)
    gflop = count_gflop_per_img(torchvision.models.resnet50(), 256)
    assert math.isclose(gflop, 10.68, rel_tol=0.01)


def test_hardware_auto_picks_the_matching_entry():
    auto = HardwareConfig(name="auto")
    assert resolve_hardware(auto, "NVIDIA H100 80GB HBM3", True).name == "h100_sxm"
    assert resolve_hardware(auto, "NVIDIA H200", True).name == "h200"
    laptop = resolve_hardware(auto, "NVIDIA GeForce RTX 4060 Laptop GPU", True)
    assert laptop.name == "rtx4060_laptop"
    assert resolve_hardware(auto, "AMD EPYC", False).name == "cpu"
    unknown = resolve_hardware(auto, "NVIDIA L4", True)
    assert unknown.name == "auto" and "no entry" in unknown.description and not unknown.peak_tflops
    named = known_hardware()["a100"]
    assert resolve_hardware(named, "whatever", True) is named


class _WallEvent:
    """A stand-in for torch.cuda.Event on a machine without CUDA: wall-clock timestamps."""

    def __init__(self, enable_timing: bool = False) -> None:
        self.t: float | None = None

    def record(self, stream=None) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        assert self.t is not None, "waited for an event never recorded"

    def elapsed_time(self, end: _WallEvent) -> float:
        assert self.t is not None and end.t is not None
        return (end.t - self.t) * 1e3


def test_cuda_timing_loop_keeps_every_call_and_meets_both_minimums(monkeypatch):
    """The chunked CUDA loop (issue the next chunk, then read the previous one), driven by
    wall-clock events: every issued call is one sample and both stopping rules hold."""
    from sweep.measure import timing

    monkeypatch.setattr(torch.cuda, "Event", _WallEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.001)

    t = timing._time_cuda(fn, torch.device("cuda"), min_iters=25, min_seconds=0.2)
    assert t.iters == len(calls) >= 25
    assert t.span_s >= 0.2
    assert all(s >= 1.0 for s in t.samples_ms)
    # chunks are sized to ~0.1 s once the call time is known: no run-away last chunk. Counted in
    # calls (each >= 1 ms), not in wall time, which a loaded machine stretches
    assert t.iters <= (0.2 + 0.35) / 0.001
