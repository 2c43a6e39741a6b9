"""Correctness checks catch broken adapters; the decisive reference makes agreement meaningful."""

from __future__ import annotations

import json

import pytest
import torch

from sweep.accuracy import compare, make_decisive, synthetic_images
from sweep.config import BenchConfig, CheckConfig, ModelConfig, RuntimeConfig, SweepConfig
from sweep.job import run_job
from sweep.models import build_model
from sweep.runtimes.torch_eager import TorchRuntime


class ChannelOrderRuntime(TorchRuntime):
    """Feeds BGR instead of RGB."""

    def infer(self, x):
        return super().infer(x.flip(1))


class UnnormalisedRuntime(TorchRuntime):
    """Forgets the mean/std normalisation: feeds 0..255 pixel values."""

    def infer(self, x):
        return super().infer(x * 58.0 + 117.0)


class ProbabilitiesRuntime(TorchRuntime):
    """Returns softmax probabilities instead of logits."""

    def infer(self, x):
        return super().infer(x).softmax(1)


class ShuffledRuntime(TorchRuntime):
    """Returns the batch in the wrong order."""

    def infer(self, x):
        return super().infer(x).roll(1, dims=0)


def test_random_model_is_decisive_after_refit():
    model = build_model(ModelConfig(name="resnet18"))
    x = synthetic_images(32, 64, 0)
    with torch.no_grad():
        before = model(x).argmax(1).unique().numel()
        make_decisive(model, synthetic_images(16, 64, 1))
        after = model(x).argmax(1).unique().numel()
    assert before <= 2  # random weights: one class for (almost) every input
    assert after >= 16  # the prediction now depends on the input


def test_compare_accepts_small_errors_and_rejects_large_ones():
    ref = torch.randn(64, 100, generator=torch.Generator().manual_seed(0))
    assert compare(ref, ref + 1e-4, "fp32").passed
    assert not compare(ref, ref + 0.5, "fp32").passed
    assert compare(ref, ref.half().float(), "fp16").passed
    wrong = compare(ref, ref[torch.randperm(64)], "fp16")
    assert not wrong.passed and wrong.agreement_top1_pct < 20
    assert not compare(ref, ref[:, :10], "fp32").passed  # wrong output shape


def _job(tmp_path, runtime: str, batch: int = 4):
    cfg = SweepConfig(runtime=RuntimeConfig(name=runtime), resolution=32, batch=batch,
                      bench=BenchConfig(warmup=1, min_iters=2, min_seconds=0.0),
                      check=CheckConfig(samples=16), cache_dir=str(tmp_path / "cache"))
    return run_job(cfg, tmp_path / runtime)


@pytest.mark.parametrize("cls", [ChannelOrderRuntime, UnnormalisedRuntime, ProbabilitiesRuntime,
                                 ShuffledRuntime])
def test_broken_adapter_is_caught(tmp_path, monkeypatch, cls):
    name = f"broken_{cls.__name__}"
    # the schema names the implementation: here the broken adapter
    monkeypatch.setattr(RuntimeConfig, "impl", f"{__name__}:{cls.__name__}")
    monkeypatch.setattr(cls, "name", name)
    result = _job(tmp_path, name)
    assert result.status == "ok"  # it ran; its outputs are marked wrong
    assert result.metrics["correct"] == 0.0, result.info["correctness"]
    saved = json.loads((tmp_path / name / "result.json").read_text())
    assert saved["metrics"]["correct"] == 0.0 and "max |error|" in saved["info"]["correctness"]


def test_correct_adapter_passes(tmp_path):
    result = _job(tmp_path, "torch")
    assert result.status == "ok" and result.metrics["correct"] == 1.0
    assert result.metrics["agreement_top1_pct"] == 100.0 and result.metrics["max_abs_err"] == 0.0
    assert result.metrics["decisive_pct"] > 50
