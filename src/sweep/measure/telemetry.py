"""What the hardware did while a job was timed: GPU power, energy, clocks, temperature,
utilisation and clock-event (throttle) reasons from NVML, and CPU package energy from RAPL.

The GPU is sampled on a side thread that sleeps between samples (`interval_s`), so the timed
loop pays for one NVML read of a few counters per interval, with the GIL released inside each
NVML call (ctypes). Energy is the difference of NVML's total-energy counter across the timed
span, never an integral of sampled power. A value that cannot be read is absent, with the reason
in `info["telemetry"]`; it is never replaced by zero.

The offline figure reads its span under the names above (`energy_j_per_img`, `gpu_power_w`, ...);
another scenario reads its own span under its prefix (`span_result`: `e2e_j_per_img`,
`served_power_w`, ...), so one job's figures of different spans never overwrite each other.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

# NVML's clocks-event reasons (nvmlClocksEventReason*, formerly *ThrottleReason*), by bit.
CLOCK_EVENTS = {
    0x1: "gpu idle",
    0x2: "applications clocks setting",
    0x4: "power cap",
    0x8: "hardware slowdown",
    0x10: "sync boost",
    0x20: "thermal (software)",
    0x40: "thermal (hardware)",
    0x80: "power brake",
    0x100: "display clock setting",
}
# the reasons that lower the clocks below what the GPU would run at: a job that saw one throttled
THROTTLING = frozenset({0x4, 0x8, 0x20, 0x40, 0x80})
RAPL_ROOT = Path("/sys/class/powercap")
# a span's metrics under its prefix: `energy_j_per_img` -> `{prefix}_j_per_img`; the GPU's are
# named without `gpu_` (its power and clocks), the CPU package's keep `cpu_`
SPAN_NAMES = {"energy_j_per_img": "j_per_img", "img_per_j": "img_per_j",
              "gpu_power_w": "power_w", "gpu_power_w_max": "power_w_max",
              "gpu_sm_clock_mhz": "sm_clock_mhz", "gpu_sm_clock_mhz_min": "sm_clock_mhz_min",
              "gpu_sm_clock_mhz_max": "sm_clock_mhz_max", "gpu_mem_clock_mhz": "mem_clock_mhz",
              "gpu_temp_c": "temp_c", "gpu_util_pct": "gpu_util_pct",
              "cpu_energy_j_per_img": "cpu_j_per_img", "cpu_power_w": "cpu_power_w"}


def decode_clock_events(mask: int) -> list[str]:
    """The names of the reasons set in an NVML clocks-event bit mask (unknown bits by value)."""
    names = [name for bit, name in CLOCK_EVENTS.items() if mask & bit]
    rest = mask & ~sum(CLOCK_EVENTS)
    if rest:
        names.append(f"unknown reason 0x{rest:x}")
    return names


@dataclass
class Samples:
    power_w: list[float] = field(default_factory=list)
    sm_mhz: list[float] = field(default_factory=list)
    mem_mhz: list[float] = field(default_factory=list)
    temp_c: list[float] = field(default_factory=list)
    util_pct: list[float] = field(default_factory=list)
    events: int = 0  # OR of every clocks-event mask seen
    reads: int = 0  # sampling passes made


def _mean(x: list[float]) -> float:
    return sum(x) / len(x)


class GpuTelemetry:
    """NVML readings of one GPU across a span: `start()`, the timed work, `stop()`, then
    `result(images)`. `nvml` is the `pynvml` module (nvidia-ml-py) or a stand-in with its API."""

    def __init__(self, nvml: ModuleType, handle: Any, interval_s: float = 0.1):
        self.nvml, self.handle, self.interval_s = nvml, handle, interval_s
        self.samples = Samples()
        self.missing: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy0: int | None = None
        self._energy1: int | None = None
        self._t0 = self._t1 = 0.0

    def _read(self, what: str, fn, *args):
        if what in self.missing:
            return None
        try:
            return fn(self.handle, *args)
        except self.nvml.NVMLError as e:  # not supported on this GPU, or no permission
            self.missing[what] = f"{type(e).__name__}: {e}"
            return None

    def _events_fn(self):
        n = self.nvml
        return getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            n.nvmlDeviceGetCurrentClocksThrottleReasons

    def sample(self) -> None:
        """One pass over the sampled counters."""
        n, s = self.nvml, self.samples
        if (p := self._read("power", n.nvmlDeviceGetPowerUsage)) is not None:
            s.power_w.append(p / 1e3)  # milliwatts
        if (c := self._read("sm_clock", n.nvmlDeviceGetClockInfo, n.NVML_CLOCK_SM)) is not None:
            s.sm_mhz.append(float(c))
        if (c := self._read("mem_clock", n.nvmlDeviceGetClockInfo, n.NVML_CLOCK_MEM)) is not None:
            s.mem_mhz.append(float(c))
        temp = self._read("temperature", n.nvmlDeviceGetTemperature, n.NVML_TEMPERATURE_GPU)
        if temp is not None:
            s.temp_c.append(float(temp))
        if (u := self._read("utilization", n.nvmlDeviceGetUtilizationRates)) is not None:
            s.util_pct.append(float(u.gpu))
        if (mask := self._read("clock_events", self._events_fn())) is not None:
            s.events |= int(mask)
        s.reads += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def _energy(self) -> int | None:
        return self._read("energy", self.nvml.nvmlDeviceGetTotalEnergyConsumption)  # mJ

    def start(self) -> None:
        self._energy0 = self._energy()
        self._t0 = time.perf_counter()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._t1 = time.perf_counter()
        self._energy1 = self._energy()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()  # the state at the end of the span

    def result(self, images: int) -> tuple[dict[str, float], dict[str, Any]]:
        s, m = self.samples, {}
        if s.power_w:
            m.update(gpu_power_w=_mean(s.power_w), gpu_power_w_max=max(s.power_w))
        if self._energy0 is not None and self._energy1 is not None and images > 0:
            joules = (self._energy1 - self._energy0) / 1e3
            if joules > 0:  # the counter moves in steps; no step seen is no figure, not zero
                m.update(energy_j_per_img=joules / images, img_per_j=images / joules)
            else:
                self.missing["energy"] = (
                    f"the energy counter did not move over {self._t1 - self._t0:.3f} s")
        if s.sm_mhz:
            m.update(gpu_sm_clock_mhz=_mean(s.sm_mhz), gpu_sm_clock_mhz_min=min(s.sm_mhz),
                     gpu_sm_clock_mhz_max=max(s.sm_mhz))
        if s.mem_mhz:
            m["gpu_mem_clock_mhz"] = _mean(s.mem_mhz)
        if s.temp_c:
            m["gpu_temp_c"] = max(s.temp_c)
        if s.util_pct:
            m["gpu_util_pct"] = _mean(s.util_pct)
        info: dict[str, Any] = {"telemetry": f"NVML, {s.reads} samples every "
                                             f"{1e3 * self.interval_s:.0f} ms"}
        seen = decode_clock_events(s.events)
        info["clock_events"] = seen
        info["throttle"] = [CLOCK_EVENTS[b] for b in sorted(THROTTLING) if s.events & b]
        if self.missing:
            info["telemetry_missing"] = dict(self.missing)
        return m, info


def open_gpu(device_index: int, uuid: str | None = None,
             nvml: ModuleType | None = None) -> tuple[ModuleType | None, Any, str]:
    """NVML and the handle of the GPU torch calls `device_index` (found by UUID when given, since
    CUDA_VISIBLE_DEVICES renumbers devices); (None, None, reason) where NVML is not there."""
    if nvml is None:
        try:
            import pynvml as nvml  # nvidia-ml-py
        except ImportError:
            return None, None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        nvml.nvmlInit()
    except Exception as e:  # no driver library: a Jetson, a container without NVML
        return None, None, f"NVML not available here ({type(e).__name__}: {e})"
    if uuid:
        try:
            return nvml, nvml.nvmlDeviceGetHandleByUUID(uuid), "ok"
        except Exception:  # an older driver's UUID form: the index, where it is unambiguous
            pass
    try:
        return nvml, nvml.nvmlDeviceGetHandleByIndex(device_index), "ok"
    except Exception as e:
        return None, None, f"NVML has no handle for cuda:{device_index} ({type(e).__name__}: {e})"


# --- CPU: RAPL ----------------------------------------------------------------------------


def rapl_zones(root: Path = RAPL_ROOT) -> list[Path]:
    """The package-level RAPL zones (intel-rapl:N, not their sub-zones intel-rapl:N:M)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)


class CpuEnergy:
    """Package energy from RAPL's `energy_uj` counters across a span (wrap-around handled);
    `reason` says why there is no figure where the counters are missing or unreadable."""

    def __init__(self, root: Path = RAPL_ROOT):
        self.zones = rapl_zones(root)
        self.reason = "" if self.zones else f"no RAPL zones under {root}"
        self._start: list[int] | None = None
        self._end: list[int] | None = None
        self._t0 = self._t1 = 0.0

    def _read(self) -> list[int] | None:
        try:
            return [int((z / "energy_uj").read_text()) for z in self.zones]
        except (OSError, ValueError) as e:  # often root-only since the PLATYPUS mitigation
            self.reason = f"RAPL not readable ({type(e).__name__}: {e})"
            return None

    def start(self) -> None:
        if self.zones:
            self._start = self._read()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self._t1 = time.perf_counter()
        if self.zones and self._start is not None:
            self._end = self._read()

    def watts(self) -> float | None:
        """Mean package power across the span: its energy over its seconds."""
        joules = self.joules()
        span = self._t1 - self._t0
        return joules / span if joules is not None and joules > 0 and span > 0 else None

    def joules(self) -> float | None:
        if self._start is None or self._end is None:
            return None
        total = 0
        for zone, a, b in zip(self.zones, self._start, self._end, strict=True):
            if b < a:
                b += int((zone / "max_energy_range_uj").read_text())
            total += b - a
        return total / 1e6

    def result(self, images: int) -> tuple[dict[str, float], dict[str, Any]]:
        joules = self.joules()
        if joules is None or joules <= 0 or images <= 0:
            return {}, {"cpu_energy": self.reason or "the RAPL counters did not move"}
        return {"cpu_energy_j_per_img": joules / images}, {
            "cpu_energy": f"RAPL, {len(self.zones)} package zone(s)"}


class Telemetry:
    """Everything read across one timed span, for the job's device: NVML on CUDA, RAPL on the
    CPU. Use as `tel.start(); ...; tel.stop(); metrics, info = tel.result(images)`."""

    def __init__(self, device: Any, enabled: bool = True, interval_s: float = 0.1,
                 nvml: ModuleType | None = None, rapl_root: Path = RAPL_ROOT):
        self.gpu: GpuTelemetry | None = None
        self.cpu: CpuEnergy | None = None
        self.reason = ""
        self._t0 = self._t1 = 0.0
        if not enabled:
            self.reason = "off (bench.telemetry=false)"
        elif getattr(device, "type", device) == "cuda":
            index, uuid = cuda_identity(device)
            lib, handle, why = open_gpu(index, uuid, nvml)
            if lib is None:
                self.reason = why
            else:
                self.gpu = GpuTelemetry(lib, handle, interval_s)
        else:
            self.cpu = CpuEnergy(rapl_root)

    @classmethod
    def of(cls, gpu: GpuTelemetry | None = None, cpu: CpuEnergy | None = None,
           reason: str = "") -> Telemetry:
        """A reader made of the given parts (a stand-in NVML's GPU, a fixture folder's RAPL)
        instead of the ones the device picks."""
        tel = cls(None, enabled=False)
        tel.gpu, tel.cpu, tel.reason = gpu, cpu, reason
        return tel

    def start(self) -> None:
        for part in (self.gpu, self.cpu):
            if part is not None:
                part.start()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self._t1 = time.perf_counter()
        for part in (self.gpu, self.cpu):
            if part is not None:
                part.stop()

    def result(self, images: int) -> tuple[dict[str, float], dict[str, Any]]:
        if self.gpu is not None:
            return self.gpu.result(images)
        if self.cpu is not None:
            return self.cpu.result(images)
        return {}, {"telemetry": self.reason}

    def span_result(self, prefix: str, images: int) -> tuple[dict[str, float], dict[str, Any]]:
        """`result` of the span under `prefix`: metrics `{prefix}_j_per_img`, `_power_w`, ...
        (SPAN_NAMES; on RAPL also `{prefix}_cpu_power_w`, the energy over the span's seconds),
        and facts `{prefix}_telemetry` (what read the span, or why nothing did: always there),
        `{prefix}_throttle`, `{prefix}_clock_events`, `{prefix}_telemetry_missing`."""
        measured, facts = self.result(images)
        if self.cpu is not None and "cpu_energy_j_per_img" in measured:
            if (watts := self.cpu.watts()) is not None:
                measured["cpu_power_w"] = watts
        metrics = {f"{prefix}_{SPAN_NAMES[k]}": v for k, v in measured.items()
                   if k in SPAN_NAMES}
        what = facts.pop("telemetry", None) or facts.pop("cpu_energy", "")
        read = self.gpu is not None or "cpu_j_per_img" in "".join(metrics)
        info = {f"{prefix}_telemetry": (f"{what}, across the {self._t1 - self._t0:.2f} s of "
                                        f"{images} images" if read else what)}
        info.update({f"{prefix}_{k}": v for k, v in facts.items()})
        return metrics, info


def job_telemetry(cfg: Any, device: Any) -> Telemetry:
    """The reader a job's config asks for (`bench.telemetry`, `bench.telemetry_interval_ms`)
    on its device."""
    return Telemetry(device, cfg.bench.telemetry, cfg.bench.telemetry_interval_ms / 1e3)


def cuda_identity(device: Any) -> tuple[int, str | None]:
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return index, (f"GPU-{uuid}" if uuid is not None else None)
