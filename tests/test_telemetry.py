"""Telemetry: the NVML sampler against a stand-in NVML whose counters the test controls (the
real one runs on the GPU: benchmarks/checks/verify_telemetry.sh), energy from the counter's
difference, clock-event reasons decoded, RAPL read from a fixture folder, and nothing made up
where a value is missing."""

from __future__ import annotations

import json
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
from sweep.metrics import unknown
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


# --- energy where the decision is made: the served load run and the end-to-end run -----------


class PoweredNvml(FakeNvml):
    """A stand-in GPU drawing `power_mw` all along: its energy counter runs with the clock (mW x s
    is mJ), so a span's energy is its power times its seconds, as on a real GPU at steady load."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.t0 = time.perf_counter()

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self._call("energy")
        return self.energy_mj + int(self.power_mw * (time.perf_counter() - self.t0))


class RunningRapl:
    """A RAPL folder (as the tests above make) whose package counter another process advances at
    `watts` every half millisecond, written whole (os.replace) as the kernel's counter reads:
    a thread of this process would wait on the serving loop's GIL and lag behind."""

    WRITER = ("import os, sys, time\n"
              "zone, watts = sys.argv[1], float(sys.argv[2])\n"
              "t0, tmp, out = time.perf_counter(), zone + '/energy_uj.tmp', zone + '/energy_uj'\n"
              "while True:\n"
              "    open(tmp, 'w').write(f'{int(watts * 1e6 * (time.perf_counter() - t0))}\\n')\n"
              "    os.replace(tmp, out)\n"
              "    time.sleep(0.0005)\n")

    def __init__(self, root, watts: float):
        self.zone = _rapl(root, "intel-rapl:0", 0, wrap=2**60)
        self.watts = watts

    def __enter__(self):
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-c", self.WRITER, str(self.zone),
                                      str(self.watts)])
        deadline = time.monotonic() + 30
        while int((self.zone / "energy_uj").read_text() or 0) == 0:  # it has started
            assert self.proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def _serving_work(scenario, service_ms: float = 2.0, batch: int = 4):
    """A job of `scenario` (its real config) over a real small linear classifier whose call
    takes at least `service_ms`, on the CPU with ready synthetic images."""
    from types import SimpleNamespace

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()

    def infer(x):
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = model(x)
        time.sleep(max(0.0, service_ms / 1e3 - (time.perf_counter() - t0)))
        return y

    cfg = SimpleNamespace(batch=batch, resolution=8, pipeline=SimpleNamespace(name="cpu"),
                          data=SimpleNamespace(name="synthetic", seed=0),
                          bench=SimpleNamespace(warmup=2, telemetry=True,
                                                telemetry_interval_ms=20.0),
                          scenario=scenario)
    runtime = SimpleNamespace(input_dtype=torch.float32,
                              input_memory_format=torch.contiguous_format, infer=infer)
    return SimpleNamespace(cfg=cfg, runtime=runtime, device=torch.device("cpu"))


def _served_time_s(m):
    return m["requests"] / m["server_qps"]  # the reported run's own span


def test_served_energy_is_read_across_the_run_at_max_qps_at_slo_on_a_stand_in_nvml():
    """Under an SLO the server reports the run at `max_qps_at_slo`: its energy per request is
    the stand-in GPU's power over that run's own seconds and requests (idle time between
    arrivals included), with its mean power, clocks and throttling."""
    from sweep.config import ServerScenarioConfig
    from sweep.scenarios.serving import ServerScenario

    nvml = PoweredNvml(power_mw=250_000, events=0x4)
    scenario = ServerScenario(lambda work: Telemetry.of(gpu=GpuTelemetry(nvml, "gpu0", 0.02)))
    work = _serving_work(ServerScenarioConfig(slo_ms=400.0, duration_s=0.05, min_requests=50,
                                              overload_ms=2000.0))
    out = scenario.run(work)
    m, info = out.metrics, out.info
    assert m["max_qps_at_slo"] > 0 and m["requests"] >= 50
    assert len(json.loads(info["load_curve"])) >= 2  # a search: the figure is its last run's
    assert m["served_power_w"] == pytest.approx(250.0)
    joules = m["served_power_w"] * _served_time_s(m)
    assert m["served_j_per_img"] == pytest.approx(joules / m["requests"], rel=0.15)
    assert m["served_img_per_j"] == pytest.approx(1 / m["served_j_per_img"])
    assert m["served_sm_clock_mhz"] == 1980 and m["served_temp_c"] == 40
    assert f"of {m['requests']:.0f} images" in info["served_telemetry"]
    assert info["served_telemetry"].startswith("NVML")
    assert info["served_throttle"] == ["power cap"]
    assert not unknown(m)
    assert "energy_j_per_img" not in m  # the offline names stay the offline span's


@pytest.mark.parametrize("scenario", ["single_stream", "concurrency", "server"])
def test_served_energy_on_rapl_for_every_serving_scenario(tmp_path, scenario):
    """On a CPU the package's RAPL counter across the reported run: J/request is its mean
    power over the run's seconds and requests, whichever way the load came."""
    from sweep.config import ScenarioConfig, choose
    from sweep.scenarios import serving

    cls = {"single_stream": serving.SingleStreamScenario,
           "concurrency": serving.ConcurrencyScenario, "server": serving.ServerScenario}[scenario]
    opts = {"server": {"target_qps": 300.0}, "concurrency": {"clients": 3}}.get(scenario, {})
    # 1 s: the stand-in counter is written by another process, which a loaded host may leave
    # unscheduled for ~0.1 s; over a 0.3 s run such a stale reading moved the power 38% (.ci/run)
    work = _serving_work(choose(ScenarioConfig, "scenario", scenario, duration_s=1.0,
                                min_requests=50, **opts))
    with RunningRapl(tmp_path, watts=40.0):
        out = cls(lambda work: Telemetry.of(cpu=CpuEnergy(tmp_path))).run(work)
    m, info = out.metrics, out.info
    assert "overloaded" not in info, info.get("overloaded")
    assert m["served_cpu_power_w"] == pytest.approx(40.0, rel=0.15)
    joules = m["served_cpu_power_w"] * _served_time_s(m)
    assert m["served_cpu_j_per_img"] == pytest.approx(joules / m["requests"], rel=0.15)
    assert info["served_telemetry"].startswith("RAPL, 1 package zone(s), across")
    assert not unknown(m)


@pytest.mark.slow
def test_no_served_energy_without_telemetry_overloaded_or_with_no_rate_met(tmp_path):
    """Nothing made up: no RAPL says why; an overloaded run has no energy at a served load; a
    server that met no rate under its SLO reports no run, so no energy either."""
    from sweep.config import ConcurrencyScenarioConfig, ServerScenarioConfig
    from sweep.scenarios.serving import ConcurrencyScenario, ServerScenario

    no_rapl = lambda work: Telemetry(work.device, rapl_root=tmp_path / "none")  # noqa: E731
    out = ConcurrencyScenario(no_rapl).run(_serving_work(ConcurrencyScenarioConfig(
        clients=1, duration_s=0.05, min_requests=20)))
    assert not [k for k in out.metrics if k.startswith("served_")]
    assert "no RAPL zones" in out.info["served_telemetry"]
    nvml = PoweredNvml()
    gpu = lambda work: Telemetry.of(gpu=GpuTelemetry(nvml, "gpu0", 0.02))  # noqa: E731
    out = ConcurrencyScenario(gpu).run(_serving_work(ConcurrencyScenarioConfig(
        clients=3, duration_s=0.05, min_requests=20, overload_ms=5.0), service_ms=20, batch=1))
    assert "overloaded" in out.info and not [k for k in out.metrics if k.startswith("served_")]
    assert out.info["served_telemetry"].startswith("overloaded: no energy at a served load")
    out = ServerScenario(gpu).run(_serving_work(ServerScenarioConfig(
        slo_ms=1.0, duration_s=0.05, min_requests=20), service_ms=20, batch=1))
    assert "max_qps_at_slo" not in out.metrics and "no arrival rate" in out.info["slo_result"]
    assert not [k for k in out.metrics if k.startswith("served_")]
    assert out.info["served_telemetry"] == "no run reported, so no energy at a served load"


@pytest.mark.parametrize("reader", ["nvml", "rapl"])
def test_an_end_to_end_job_reads_its_energy_across_the_uninstrumented_run(tmp_path, reader):
    """Files to top-1 through a real resnet18 on the CPU: `e2e_*` energy keys across the
    uninstrumented run, positive, and J/image its mean power over its seconds per image."""
    from sweep.config import (
        BenchConfig,
        CheckConfig,
        DataConfig,
        ModelConfig,
        SweepConfig,
        TorchRuntimeConfig,
        TrackingConfig,
        pipeline_config,
    )
    from sweep.demo_data import generate
    from sweep.models import build_model
    from sweep.runtimes import JobContext, create_runtime
    from sweep.scenarios.base import Workload
    from sweep.scenarios.end_to_end import EndToEndScenario

    generate(tmp_path / "set", classes=2, per_class=4)
    cfg = SweepConfig(runtime=TorchRuntimeConfig(),
                      data=DataConfig(name="imagefolder", root=str(tmp_path / "set")),
                      pipeline=pipeline_config("current"), resolution=32, batch=2,
                      model=ModelConfig(num_classes=2),
                      # 1 s: as the serving test above, against a stale read of the stand-in
                      bench=BenchConfig(warmup=1, min_iters=3, min_seconds=1.0),
                      check=CheckConfig(samples=2), tracking=TrackingConfig(enabled=False))
    device = torch.device("cpu")
    ctx = JobContext(device=device, precision="fp32", batch=2, resolution=32,
                     channels_last=False, cache=None)
    runtime = create_runtime(cfg.runtime, ctx)
    runtime.prepare(build_model(cfg.model), torch.zeros(2, 3, 32, 32))
    work = Workload(cfg=cfg, device=device, runtime=runtime, x=torch.zeros(2, 3, 32, 32),
                    gflop_per_img=0.0, hardware=None)
    rapl = tmp_path / "rapl"
    rapl.mkdir()
    try:
        if reader == "nvml":
            nvml = PoweredNvml(power_mw=120_000)
            out = EndToEndScenario(
                lambda w: Telemetry.of(gpu=GpuTelemetry(nvml, "gpu0", 0.02))).run(work)
            power, energy = "e2e_power_w", "e2e_j_per_img"
        else:
            with RunningRapl(rapl, watts=30.0):
                out = EndToEndScenario(lambda w: Telemetry.of(cpu=CpuEnergy(rapl))).run(work)
            power, energy = "e2e_cpu_power_w", "e2e_cpu_j_per_img"
    finally:
        runtime.close()
    m, info = out.metrics, out.info
    assert m[power] > 0 and m[energy] > 0
    assert m[power] == pytest.approx(120.0 if reader == "nvml" else 30.0, rel=0.15)
    # J/image = mean power x the run's seconds / its images = power / e2e_fps
    assert m[energy] == pytest.approx(m[power] / m["e2e_fps"], rel=0.15)
    assert "e2e_telemetry" in info and not unknown(m)
    assert "energy_j_per_img" not in m and "cpu_energy_j_per_img" not in m
