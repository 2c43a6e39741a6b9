"""runtime=trt without TensorRT: the checks, settings and cache key before the TensorRT call."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sweep.cache import ArtifactCache
from sweep.config import RUNTIME_SCHEMAS, SweepConfig, TrackingConfig, TrtRuntimeConfig
from sweep.runtimes import JobContext, UnsupportedError, create_runtime
from sweep.runtimes.tensorrt import (
    TensorRTRuntime,
    cache_parts,
    compile_settings,
    missing_library_error,
)

PIP = "pip install 'inference-sweep[trt]' --extra-index-url https://pypi.nvidia.com"
HAVE_TRT = importlib.util.find_spec("torch_tensorrt") is not None
MODEL = {"arch": "resnet18", "num_classes": "1000", "state": "0123456789abcdef"}
ENV = {"torch": "2.14.1", "torch_tensorrt": "2.14.0", "tensorrt": "10.13.0",
       "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def _ctx(tmp_path, precision: str = "fp32", device: str = "cuda", batch: int = 1,
         resolution: int = 224, channels_last: bool = False) -> JobContext:
    return JobContext(device=torch.device(device), precision=precision, batch=batch,
                      resolution=resolution, channels_last=channels_last,
                      cache=ArtifactCache(tmp_path),
                      model_identity=dict(MODEL))


def test_missing_library_message_names_the_pip_command():
    err = missing_library_error(ModuleNotFoundError("No module named 'torch_tensorrt'"))
    assert isinstance(err, UnsupportedError)
    msg = str(err)
    assert PIP in msg
    assert "pip install torch-tensorrt tensorrt" in msg
    assert "No module named 'torch_tensorrt'" in msg


@pytest.mark.skipif(HAVE_TRT, reason="torch_tensorrt is installed here")
def test_gpu_job_without_torch_tensorrt_fails_before_any_work(tmp_path):
    with pytest.raises(UnsupportedError) as e:
        create_runtime(TrtRuntimeConfig(), _ctx(tmp_path))
    assert PIP in str(e.value)
    assert "NVIDIA GPU" not in str(e.value)


def test_cpu_job_fails_at_once(tmp_path):
    with pytest.raises(UnsupportedError, match="runtime=trt needs an NVIDIA GPU"):
        create_runtime(TrtRuntimeConfig(), _ctx(tmp_path, device="cpu"))


@pytest.mark.skipif(HAVE_TRT, reason="torch_tensorrt is installed here")
def test_cpu_job_through_run_job_fails_with_both_reasons(tmp_path):
    from sweep.job import run_job

    cfg = SweepConfig(runtime=TrtRuntimeConfig(), resolution=32, device="cpu",
                      tracking=TrackingConfig(enabled=False), cache_dir=str(tmp_path / "cache"))
    result = run_job(cfg, tmp_path / "job")
    assert result.status == "failed"
    assert "UnsupportedError" in result.error
    assert "needs an NVIDIA GPU" in result.error and PIP in result.error


@pytest.mark.parametrize("precision, enabled, disable_tf32", [
    ("fp32", {torch.float32}, True),
    ("tf32", {torch.float32}, False),
    ("fp16", {torch.float16}, True),
    ("bf16", {torch.bfloat16}, True),
    ("int8", {torch.int8}, True),
])
def test_compile_settings_per_precision(tmp_path, precision, enabled, disable_tf32):
    s = compile_settings(TrtRuntimeConfig(), _ctx(tmp_path, precision))
    assert s["ir"] == "dynamo"
    assert s["enabled_precisions"] == enabled
    assert s["disable_tf32"] is disable_tf32


def test_compile_settings_builder_options_and_device(tmp_path):
    cfg = TrtRuntimeConfig(workspace_gb=1.5, optimization_level=5)
    s = compile_settings(cfg, _ctx(tmp_path, device="cuda:1"))
    assert s["workspace_size"] == 3 * 2**29
    assert s["optimization_level"] == 5
    assert s["device"] == torch.device("cuda", 1)
    assert compile_settings(cfg, _ctx(tmp_path))["device"] == torch.device("cuda", 0)


def test_input_dtype_and_layout(tmp_path):
    def runtime(precision: str) -> TensorRTRuntime:
        return TensorRTRuntime(TrtRuntimeConfig(), _ctx(tmp_path, precision, channels_last=True))

    assert runtime("fp16").input_dtype == torch.float16
    assert runtime("bf16").input_dtype == torch.bfloat16
    assert runtime("int8").input_dtype == torch.float32  # Q/DQ inside the engine
    assert runtime("fp32").input_memory_format == torch.contiguous_format


def test_cache_parts_change_with_precision_shape_build_and_weights(tmp_path):
    cfg = TrtRuntimeConfig()
    key = ArtifactCache.key

    def k(cfg=cfg, env=ENV, **ctx) -> str:
        return key(cache_parts(cfg, _ctx(tmp_path, **ctx), env))

    base = k()
    assert k() == base  # deterministic
    variants = [k(precision="fp16"), k(precision="tf32"), k(precision="int8"),
                k(batch=8), k(resolution=256),
                k(cfg=TrtRuntimeConfig(workspace_gb=8)),
                k(cfg=TrtRuntimeConfig(optimization_level=5)),
                k(env={**ENV, "gpu": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}),
                k(env={**ENV, "tensorrt": "10.14.0"}),
                key(cache_parts(cfg, JobContext(**{**vars(_ctx(tmp_path)),
                                                   "model_identity": {**MODEL, "state": "f"}}),
                                ENV))]
    assert len({base, *variants}) == len(variants) + 1


def test_cache_parts_name_model_and_int8_calibration(tmp_path):
    parts = cache_parts(TrtRuntimeConfig(calibration_batches=4), _ctx(tmp_path, "int8", batch=2),
                        ENV)
    assert {k: parts[k] for k in MODEL} == MODEL  # the job's model identity
    assert parts["shape"] == [2, 3, 224, 224]
    assert parts["calibration_batches"] == 4
    fp16 = cache_parts(TrtRuntimeConfig(calibration_batches=4), _ctx(tmp_path, "fp16"), ENV)
    assert "calibration_batches" not in fp16  # calibration does not split fp16 entries


def test_module_imports_without_tensorrt():
    from sweep.runtimes import runtime_class

    assert runtime_class(RUNTIME_SCHEMAS["trt"]) is TensorRTRuntime
    assert TensorRTRuntime.supported == {"cuda": ("fp32", "tf32", "fp16", "bf16", "int8")}
