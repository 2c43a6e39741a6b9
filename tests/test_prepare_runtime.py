"""job.prepare_runtime, the one way a probe builds a runtime: the job's model, prepared and fed
the job's first batch, refused where the job would be refused."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sweep.accuracy import make_decisive, synthetic_images
from sweep.config import ModelConfig, SweepConfig, TorchRuntimeConfig, TrtRuntimeConfig
from sweep.job import prepare_runtime
from sweep.models import build_model
from sweep.runtimes import UnsupportedError


def test_the_prepared_runtime_infers_the_jobs_model_on_its_first_batch(tmp_path):
    cfg = SweepConfig(runtime=TorchRuntimeConfig(), resolution=32, batch=2, device="cpu",
                      cache_dir=str(tmp_path / "cache"))
    runtime, device, x = prepare_runtime(cfg)
    try:
        out = runtime.infer(x)
    finally:
        runtime.close()
    model = build_model(ModelConfig()).eval()  # the same model as the job builds, by hand
    make_decisive(model, synthetic_images(16, 32, 1), seed=cfg.model.seed)
    images = synthetic_images(cfg.check.samples, 32, 0)[:2]
    with torch.inference_mode():
        expected = model(images)
    assert device == torch.device("cpu") and x.shape == (2, 3, 32, 32)
    assert torch.allclose(x, images)
    assert torch.equal(out.argmax(1), expected.argmax(1))
    assert torch.allclose(out, expected, atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("torch_tensorrt") is not None,
                    reason="torch_tensorrt is installed here")
def test_a_runtime_the_device_cannot_serve_is_refused_before_any_work(tmp_path):
    cfg = SweepConfig(runtime=TrtRuntimeConfig(), resolution=32, device="cpu",
                      cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UnsupportedError, match="needs an NVIDIA GPU"):
        prepare_runtime(cfg)
    assert not (tmp_path / "cache").exists()
