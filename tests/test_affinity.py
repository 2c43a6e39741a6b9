"""bench.cpu_affinity: the CPU list parsed and checked, NVML's GPU-local CPUs read from a
stand-in NVML (the real one ran on a GPU: benchmarks/results/h200_affinity_mps_2026-12-03), every
thread of the process pinned for the timed span only, and a job that records what it ran on."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import pytest
import torch

from sweep.config import (
    BenchConfig,
    CheckConfig,
    RuntimeConfig,
    SingleStreamScenarioConfig,
    SweepConfig,
)
from sweep.errors import ConfigError
from sweep.job import run_job
from sweep.measure import affinity

CPUS = frozenset(os.sched_getaffinity(0))


class CpuNvml:
    """NVML's calls that gpu_cpus makes, answering a fixed affinity mask (64-bit words)."""

    def __init__(self, words):
        self.words = words
        self.asked = None

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"gpu{i}"

    def nvmlDeviceGetCpuAffinity(self, handle, size):
        self.asked = (handle, size)
        return self.words


def test_cpu_lists_parse_and_print_as_linux_writes_them():
    assert affinity.parse_cpulist("0-3,8") == {0, 1, 2, 3, 8}
    assert affinity.format_cpulist({0, 1, 2, 3, 8, 10, 11}) == "0-3,8,10-11"
    assert affinity.format_cpulist(affinity.parse_cpulist("5")) == "5"
    with pytest.raises(ConfigError, match="bench.cpu_affinity"):
        affinity.parse_cpulist("3-1")


@pytest.mark.parametrize("bad", ["all", "0-", "1,,2", "-1", "gpu0"])
def test_a_malformed_set_is_refused_with_the_key_and_what_to_type(bad):
    with pytest.raises(ConfigError) as e:
        BenchConfig(cpu_affinity=bad)
    assert e.value.key == "bench.cpu_affinity"
    assert repr(bad) in str(e.value) and "bench.cpu_affinity=gpu" in str(e.value)


def test_gpu_takes_nvmls_local_cpus_within_the_process_set():
    nvml = CpuNvml([0b1010, 0b1])  # CPUs 1 and 3, and 64 in the second word
    cpus, said = affinity.resolve("gpu", torch.device("cuda", 0), nvml,
                                  allowed=frozenset(range(4)))
    assert cpus == {1, 3}
    assert said == "1,3 (NVML: local to cuda:0)"
    assert nvml.asked[0] == "gpu0" and nvml.asked[1] >= 1
    with pytest.raises(RuntimeError, match="not among this process's"):
        affinity.resolve("gpu", torch.device("cuda", 0), nvml, allowed=frozenset({0, 2}))


def test_gpu_on_a_cpu_job_and_cpus_outside_the_process_are_config_errors():
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        affinity.resolve("gpu", torch.device("cpu"))
    outside = max(CPUS) + 1
    with pytest.raises(ConfigError, match="CPUs this process may use"):
        affinity.resolve(str(outside), torch.device("cpu"))
    assert affinity.resolve("none", torch.device("cpu")) == (None, "none (the scheduler's choice)")


def test_pinned_moves_every_thread_and_puts_the_set_back():
    one = frozenset({min(CPUS)})
    started, release, seen = threading.Event(), threading.Event(), {}

    def worker():
        started.set()
        release.wait()
        seen["inside"] = frozenset(os.sched_getaffinity(0))

    t = threading.Thread(target=worker)
    t.start()
    started.wait()
    threads = torch.get_num_threads()
    with affinity.pinned(one):
        assert torch.get_num_threads() == 1  # no more intra-op threads than CPUs
        assert frozenset(os.sched_getaffinity(0)) == one
        assert frozenset(os.sched_getaffinity(t.native_id)) == one  # a thread started before
        release.set()
        t.join()
    assert seen["inside"] == one
    assert frozenset(os.sched_getaffinity(0)) == CPUS
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("scenario", [None, SingleStreamScenarioConfig(duration_s=0.05,
                                                                       min_requests=5)])
def test_a_job_times_on_its_cpus_and_says_so(tmp_path, monkeypatch, scenario):
    one = min(CPUS)
    during = []
    real = affinity.pinned

    @contextmanager
    def spy(cpus):  # the process's set while the scenarios run
        with real(cpus):
            during.append(frozenset(os.sched_getaffinity(0)))
            yield

    monkeypatch.setattr(affinity, "pinned", spy)
    cfg = SweepConfig(runtime=RuntimeConfig(name="torch"), resolution=32, batch=1,
                      scenario=scenario,
                      bench=BenchConfig(warmup=1, min_iters=2, min_seconds=0.0,
                                        cpu_affinity=str(one)),
                      check=CheckConfig(samples=2), cache_dir=str(tmp_path / "cache"))
    result = run_job(cfg, tmp_path / "job")
    assert result.status == "ok", result.error
    assert result.info["cpu_affinity"] == str(one)
    assert during == [frozenset({one})]
    assert frozenset(os.sched_getaffinity(0)) == CPUS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="real NVML needs a GPU")
def test_real_nvml_names_cpus_this_process_may_use():
    cpus, said = affinity.resolve("gpu", torch.device("cuda"))  # as a job names its device
    assert cpus and cpus <= CPUS
    assert said.endswith("(NVML: local to cuda:0)")
