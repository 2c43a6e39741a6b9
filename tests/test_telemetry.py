"""Telemetry: the NVML sampler against a stand-in NVML whose counters the test controls (the
real one runs on the GPU: benchmarks/checks/verify_telemetry.sh), energy from the counter's
difference, clock-event reasons decoded, RAPL read from a fixture folder, and nothing made up
where a value is missing."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import torch

from sweep.measure.telemetry import (
    CpuEnergy,
    GpuTelemetry,
    Telemetry,
    decode_clock_events,
    open_gpu,
)
from sweep.measure.timing import time_calls
from sweep.scenarios.inference import stability_notes


class FakeNvml:
    """pynvml's API over counters the test sets; counts every call."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    class NVMLError(Exception):
        pass

    def __init__(self, energy_mj=1_000_000, power_mw=300_000, sm=1980, mem=2619, temp=40,
                 util=97, events=0, unsupported=()):
        self.energy_mj, self.power_mw, self.sm, self.mem = energy_mj, power_mw, sm, mem
        self.temp, self.util, self.events = temp, util, events
        self.unsupported = set(unsupported)
        self.calls = 0
        self.lock = threading.Lock()

    def _call(self, what):
        with self.lock:
            self.calls += 1
        if what in self.unsupported:
            raise self.NVMLError(f"{what}: Not Supported")

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"gpu{i}"

    def nvmlDeviceGetHandleByUUID(self, uuid):
        raise self.NVMLError("no such UUID")

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self._call("energy")
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, h):
        self._call("power")
        return self.power_mw

    def nvmlDeviceGetClockInfo(self, h, kind):
        self._call("clock")
        return self.sm if kind == self.NVML_CLOCK_SM else self.mem

    def nvmlDeviceGetTemperature(self, h, kind):
        self._call("temperature")
        return self.temp

    def nvmlDeviceGetUtilizationRates(self, h):
        self._call("utilization")
        return SimpleNamespace(gpu=self.util, memory=10)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        self._call("events")
        return self.events


def test_clock_event_reasons_are_decoded_by_bit():
    assert decode_clock_events(0) == []
    assert decode_clock_events(0x4 | 0x40) == ["power cap", "thermal (hardware)"]
    assert decode_clock_events(0x1 | 0x10000) == ["gpu idle", "unknown reason 0x10000"]


def test_energy_is_the_counter_difference_over_the_images():
    nvml = FakeNvml(energy_mj=5_000_000)
    tel = GpuTelemetry(nvml, "gpu0", interval_s=0.01)
    tel.start()
    nvml.energy_mj += 12_000  # 12 J over the span
    nvml.power_mw, nvml.sm, nvml.temp = 450_000, 1500, 71
    nvml.events = 0x4  # the power cap lowered the clocks
    time.sleep(0.05)
    tel.stop()
    m, info = tel.result(images=600)
    assert m["energy_j_per_img"] == pytest.approx(12.0 / 600)
    assert m["img_per_j"] == pytest.approx(600 / 12.0)
    assert m["gpu_power_w_max"] == pytest.approx(450.0)
    assert 300.0 <= m["gpu_power_w"] <= 450.0
    assert m["gpu_sm_clock_mhz_min"] == 1500 and m["gpu_sm_clock_mhz_max"] == 1980
    assert m["gpu_temp_c"] == 71 and m["gpu_mem_clock_mhz"] == 2619
    assert m["gpu_util_pct"] == pytest.approx(97)
    assert info["throttle"] == ["power cap"] and "power cap" in info["clock_events"]
    notes = stability_notes({**m, "infer_cv_pct": 1.0}, info, 5.0)
    assert any("SM clock ranged 1500-1980" in n for n in notes)
    assert any("throttled (power cap)" in n for n in notes)


def test_what_cannot_be_read_is_absent_with_its_reason_never_zero():
    nvml = FakeNvml(unsupported={"energy", "power"})
    tel = GpuTelemetry(nvml, "gpu0", interval_s=0.01)
    tel.start()
    tel.stop()
    m, info = tel.result(images=100)
    for name in ("energy_j_per_img", "img_per_j", "gpu_power_w", "gpu_power_w_max"):
        assert name not in m
    assert "Not Supported" in info["telemetry_missing"]["energy"]
    assert m["gpu_sm_clock_mhz"] == 1980  # what is readable still is
    # a counter that did not move is no figure either
    still = GpuTelemetry(FakeNvml(), "gpu0", interval_s=0.01)
    still.start()
    still.stop()
    m, info = still.result(images=100)
    assert "energy_j_per_img" not in m and "did not move" in info["telemetry_missing"]["energy"]


def test_the_sampler_sleeps_between_reads_and_stops_with_the_span():
    """It cannot slow the timed loop by more than a few counter reads per interval: over a
    0.3 s span at 50 ms it makes a bounded number of passes, and none after stop()."""
    nvml = FakeNvml()
    tel = GpuTelemetry(nvml, "gpu0", interval_s=0.05)
    tel.start()
    time.sleep(0.3)
    tel.stop()
    passes = tel.samples.reads
    assert 2 <= passes <= 0.3 / 0.05 + 3  # one at each end, one per interval at most
    calls = nvml.calls
    time.sleep(0.15)
    assert nvml.calls == calls and not tel._thread.is_alive()


def test_time_calls_reads_the_counters_across_the_timed_calls_only():
    events = []

    class Span:
        def start(self):
            events.append(("start", len(calls)))

        def stop(self):
            events.append(("stop", len(calls)))

    calls: list[int] = []
    timing = time_calls(lambda: calls.append(1), torch.device("cpu"), warmup=4, min_iters=10,
                        min_seconds=0.0, span=Span())
    assert events == [("start", 4), ("stop", 4 + timing.iters)]


def test_no_nvml_gives_the_reason():
    class Broken(FakeNvml):
        def nvmlInit(self):
            raise self.NVMLError("Driver Not Loaded")

    lib, handle, why = open_gpu(0, None, Broken())
    assert lib is None and "Driver Not Loaded" in why
    lib, handle, why = open_gpu(0, "GPU-x", FakeNvml())  # the UUID unknown: by index
    assert lib is not None and handle == "gpu0"


def _rapl(root, zone, energy, wrap=10_000_000):
    z = root / zone
    z.mkdir(parents=True)
    (z / "energy_uj").write_text(f"{energy}\n")
    (z / "max_energy_range_uj").write_text(f"{wrap}\n")
    return z


def test_rapl_sums_package_zones_and_handles_wraparound(tmp_path):
    p0 = _rapl(tmp_path, "intel-rapl:0", 9_000_000)
    p1 = _rapl(tmp_path, "intel-rapl:1", 100)
    _rapl(tmp_path, "intel-rapl:0:0", 5)  # a sub-zone (core), inside package 0: not added
    cpu = CpuEnergy(tmp_path)
    assert [z.name for z in cpu.zones] == ["intel-rapl:0", "intel-rapl:1"]
    cpu.start()
    (p0 / "energy_uj").write_text("1000000\n")  # wrapped: 9 J -> 10 J -> 1 J, i.e. +2 J
    (p1 / "energy_uj").write_text("3000100\n")  # +3 J
    cpu.stop()
    m, info = cpu.result(images=50)
    assert m["cpu_energy_j_per_img"] == pytest.approx(5.0 / 50)
    assert "2 package zone(s)" in info["cpu_energy"]


def test_rapl_absent_or_unreadable_says_why(tmp_path):
    m, info = Telemetry(torch.device("cpu"), rapl_root=tmp_path / "none").result(10)
    assert m == {} and "no RAPL zones" in info["cpu_energy"]
    z = _rapl(tmp_path, "intel-rapl:0", 1)
    cpu = CpuEnergy(tmp_path)
    (z / "energy_uj").unlink()
    cpu.start()
    cpu.stop()
    m, info = cpu.result(10)
    assert m == {} and "not readable" in info["cpu_energy"]


def test_the_energy_plot_draws_the_pareto_front(tmp_path):
    from sweep.analysis import pareto_front
    from sweep.plots import write_plots
    from sweep.sources import Sweep

    rows = [{"job_dir": f"{i}_j", "job": f"j{i}", "status": "ok", "correct": 1,
             "runtime": rt, "batch": b, "fps": fps, "energy_j_per_img": e,
             "fps_rounds_ci95_low": fps * 0.9, "fps_rounds_ci95_high": fps * 1.1}
            for i, (rt, b, fps, e) in enumerate([("torch", 1, 500.0, 0.9), ("torch", 32, 9000.0,
                                                  0.05), ("onnx", 1, 700.0, 0.6),
                                                 ("onnx", 32, 8000.0, 0.08)])]
    front = pareto_front(rows, "energy_j_per_img")
    assert [r["job"] for r in front] == ["j1"]  # most FPS for the least energy
    plots = {p.name: p for p in write_plots(Sweep("s", rows, ["runtime", "batch"]), tmp_path)}
    assert plots["fps_vs_energy"].path.is_file()
    assert plots["fps_vs_batch"].path.is_file()  # with the rounds' error bars
