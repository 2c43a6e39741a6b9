"""The serving load generator without a framework: the batcher's launch decision as a table, and
the serving loop driven by a fake clock and a fake device, so every time is exact (no sleeps, no
torch)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sweep.serving.generator import launch_decision, run_load

# queued, oldest_wait_s, running, batch, delay_s, in_flight, more_can_arrive -> launch
LAUNCH_CASES = {
    "nothing queued": ((0, 0.0, 0, 4, 0.0, 1, True), False),
    "a full batch goes at once": ((4, 0.0, 0, 4, 0.01, 1, True), True),
    "a partial batch waits to fill": ((1, 0.005, 0, 4, 0.01, 1, True), False),
    "the oldest waited its delay": ((1, 0.01, 0, 4, 0.01, 1, True), True),
    "no delay: a lone request goes at once": ((1, 0.0, 0, 4, 0.0, 1, True), True),
    "nothing more can arrive to fill it": ((1, 0.0, 0, 4, 0.01, 1, False), True),
    "in_flight reached": ((4, 0.0, 1, 4, 0.0, 1, True), False),
    "a full batch queues behind a running one": ((4, 0.0, 1, 4, 0.0, 2, True), True),
    "no delay: a partial batch waits for the running one": ((1, 0.0, 1, 4, 0.0, 2, True), False),
    "behind a running one even when nothing more can arrive": ((1, 0.0, 1, 4, 0.0, 2, False),
                                                               False),
    "behind a running one once it waited a nonzero delay": ((1, 0.01, 1, 4, 0.01, 2, True), True),
    "behind a running one before its delay": ((3, 0.005, 1, 4, 0.01, 2, True), False),
    "a full batch with in_flight reached": ((4, 0.0, 2, 4, 0.0, 2, True), False),
}


@pytest.mark.parametrize("case", LAUNCH_CASES)
def test_the_batcher_launches_a_batch_exactly_when_the_rule_says(case):
    args, expected = LAUNCH_CASES[case]
    assert launch_decision(*args) is expected


class FakeClock:
    """Time that passes only when the serving loop reads it (one tick a read, so its spin loops
    end) or sleeps."""

    def __init__(self, tick: float = 1e-6) -> None:
        self.t, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class FakeDevice:
    """A runner whose batches each take `service_s` of the fake clock, one after another: with
    `queued`, like a GPU (the call returns at once, the host waits on what it returns); without,
    the call itself takes the time."""

    def __init__(self, clock: FakeClock, service_s: float, queued: bool = False) -> None:
        self.clock, self.service_s, self.queued = clock, service_s, queued
        self.free_at = 0.0
        self.sizes: list[int] = []
        self.most_outstanding = 0
        self.outstanding: list[FakeDevice.Pending] = []

    def __call__(self, payloads):
        self.sizes.append(len(payloads))
        self.free_at = max(self.free_at, self.clock.t) + self.service_s
        if not self.queued:
            self.clock.t = self.free_at
            return None
        self.outstanding = [p for p in self.outstanding if not p.ready()]
        pending = FakeDevice.Pending(self.clock, self.free_at)
        self.outstanding.append(pending)
        self.most_outstanding = max(self.most_outstanding, len(self.outstanding))
        return pending

    class Pending:
        def __init__(self, clock: FakeClock, done_at: float) -> None:
            self.clock, self.done_at = clock, done_at

        def ready(self) -> bool:
            return self.clock.t >= self.done_at

        def wait(self) -> None:
            self.clock.t = max(self.clock.t, self.done_at)


def serve(device: FakeDevice, clock: FakeClock, batch: int, **kw):
    kw = {"payloads": 8, "delay_s": 0.0, "overload_s": 1.0, **kw}
    return run_load(device, batch, clock=clock, sleep=clock.sleep, **kw)


TOL = 5e-5  # the fake clock's ticks between a decision and its effect


def test_a_lone_request_runs_at_once_and_what_arrives_meanwhile_runs_next():
    clock = FakeClock()
    device = FakeDevice(clock, 0.002)
    run = serve(device, clock, 4, arrivals=np.array([0.001, 0.0011, 0.0012, 0.0013, 0.01]))
    assert not run.overloaded and run.fills == [1, 3, 1] == device.sizes
    starts = [r.start for r in run.requests]
    assert np.allclose(starts, [0.001, 0.003, 0.003, 0.003, 0.01], atol=TOL)
    assert np.allclose(run.latencies_ms(), [2.0, 3.9, 3.8, 3.7, 2.0], atol=1e3 * TOL)


def test_the_batcher_waits_its_delay_for_a_batch_to_fill_but_not_for_a_full_one():
    clock = FakeClock()
    device = FakeDevice(clock, 0.001)
    run = serve(device, clock, 4, delay_s=0.005,
                arrivals=np.array([0.0001, 0.001, 0.002, 0.020, 0.0300, 0.0301, 0.0302, 0.0303]))
    assert run.fills == [3, 1, 4]
    starts = [r.start for r in run.requests]
    # the first three wait out the oldest's delay, and so does the lone one (more will arrive)
    assert np.allclose(starts[:3], 0.0051, atol=TOL)
    assert np.allclose(starts[3], 0.025, atol=TOL)
    assert np.allclose(starts[4:], 0.0303, atol=TOL)  # full: no wait for the delay


def test_batches_queue_on_the_device_up_to_in_flight_and_the_host_waits_for_the_oldest():
    clock = FakeClock()
    device = FakeDevice(clock, 0.002, queued=True)
    run = serve(device, clock, 2, in_flight=2, arrivals=np.full(6, 0.001))
    assert run.fills == [2, 2, 2] and device.most_outstanding == 2
    done = sorted(r.done for r in run.requests)
    assert np.allclose(done, [0.003, 0.003, 0.005, 0.005, 0.007, 0.007], atol=TOL)


def test_closed_loop_clients_send_again_when_answered_until_the_duration():
    clock = FakeClock()
    device = FakeDevice(clock, 0.001)
    run = serve(device, clock, 2, clients=2, duration_s=0.01)
    assert set(run.fills) == {2} and len(run.requests) == 2 * len(run.fills)
    assert 9 <= len(run.fills) <= 11  # one batch a millisecond for 10 ms
    assert np.allclose(run.latencies_ms(), 1.0, atol=1e3 * TOL)  # no queueing with 2 clients


def test_an_overloaded_run_stops_once_the_oldest_request_waited_too_long():
    clock = FakeClock()
    device = FakeDevice(clock, 0.010)  # 100 requests/s offered 1,000/s
    run = serve(device, clock, 1, overload_s=0.05, arrivals=np.arange(1, 1001) * 1e-3)
    assert run.overloaded and run.overload_reason == "the oldest request waited over 50 ms"
    assert len(run.requests) < 10 and clock.t < 0.1


def test_the_load_generator_imports_no_framework():
    code = ("import sys, sweep.serving.generator, sweep.serving.driver; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
