"""runtime=onnx with a real torch.onnx export and the real ONNX Runtime on the CPU."""

from __future__ import annotations

import onnx
import onnxruntime
import pytest
import torch

from sweep.accuracy import make_decisive, synthetic_images
from sweep.cache import ArtifactCache
from sweep.config import RUNTIME_SCHEMAS, ModelConfig, OnnxRuntimeConfig
from sweep.models import build_model
from sweep.runtimes import JobContext, UnsupportedError, create_runtime
from sweep.runtimes.ort import (
    CPU_EP,
    CUDA_EP,
    GPU_INSTALL,
    TRT_EP,
    OnnxRuntime,
    provider_options,
    select_providers,
)

RES = 64
HAVE_CUDA_EP = CUDA_EP in onnxruntime.get_available_providers()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """resnet18 whose logits depend on the input (see sweep.accuracy), so agreement means
    something. Runtimes must not modify it."""
    m = build_model(ModelConfig())
    make_decisive(m, synthetic_images(16, RES, 1))
    return m


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return synthetic_images(8, RES, 0)


def _ctx(tmp_path, precision: str = "fp32", device: str = "cpu", batch: int = 8,
         channels_last: bool = False) -> JobContext:
    return JobContext(device=torch.device(device), precision=precision, batch=batch,
                      resolution=RES, channels_last=channels_last,
                      cache=ArtifactCache(tmp_path))


def _prepare(model, x, ctx, cfg: OnnxRuntimeConfig | None = None):
    ctx.model_identity = ArtifactCache.model_identity(ModelConfig(), model)  # as job.py does
    rt = create_runtime(cfg or OnnxRuntimeConfig(), ctx)
    return rt, rt.prepare(model, x)


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref).abs().max() / ref.std()).item()


def test_registered():
    assert RUNTIME_SCHEMAS["onnx"].impl == "sweep.runtimes.ort:OnnxRuntime"


def test_fp32_matches_torch(tmp_path, model, x):
    with torch.no_grad():
        ref = model(x)
    rt, prep = _prepare(model, x, _ctx(tmp_path))
    assert prep.cache == "miss" and prep.export_s > 0
    assert prep.info["provider"] == CPU_EP and prep.info["exporter"] == "torchscript"
    assert rt.input_dtype == torch.float32
    out = rt.infer(x)
    assert isinstance(out, torch.Tensor) and out.shape == (8, 1000) and out.dtype == torch.float32
    assert (out - ref).abs().max().item() < 1e-3
    assert _rel_err(rt.infer(x[:3]), ref[:3]) < 1e-4  # the batch axis is dynamic
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_second_prepare_hits_the_cache_and_exports_nothing(tmp_path, model, x, monkeypatch):
    _, first = _prepare(model, x, _ctx(tmp_path))
    assert first.cache == "miss"

    def no_export(*args, **kwargs):
        raise AssertionError("exported again despite a valid cache entry")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    rt, second = _prepare(model, x, _ctx(tmp_path, batch=2))  # any batch: one export
    assert second.cache == "hit"
    assert rt.infer(x[:2]).shape == (2, 1000)


def test_changed_weights_are_a_new_entry(tmp_path, model, x):
    """The job re-fits a random model's classifier after the model's identity was taken, so the
    weights themselves are part of the key."""
    _prepare(model, x, _ctx(tmp_path))
    other = build_model(ModelConfig())
    _, prep = _prepare(other, x, _ctx(tmp_path))
    assert prep.cache == "miss"


def test_corrupt_entry_is_rebuilt(tmp_path, model, x):
    _prepare(model, x, _ctx(tmp_path))
    (onnx_file,) = (tmp_path / "onnx").glob("*/model.onnx")
    with open(onnx_file, "r+b") as f:
        f.truncate(onnx_file.stat().st_size // 2)
    rt, prep = _prepare(model, x, _ctx(tmp_path))
    assert prep.cache == "rebuilt"
    with torch.no_grad():
        assert _rel_err(rt.infer(x), model(x)) < 1e-4


def test_fp16_runs_on_the_cpu(tmp_path, model, x):
    rt, prep = _prepare(model, x, _ctx(tmp_path, "fp16"))
    assert rt.input_dtype == torch.float16
    out = rt.infer(x.half())
    assert out.dtype == torch.float16
    with torch.no_grad():
        assert _rel_err(out, model(x)) < 5e-2
    assert all(p.dtype == torch.float32 for p in model.parameters())  # exported from a copy


def test_int8_is_quantised_runs_and_roughly_agrees(tmp_path, model, x):
    rt, prep = _prepare(model, x, _ctx(tmp_path, "int8"))
    assert prep.cache == "miss" and "QDQ" in prep.info["quant"]
    assert rt.input_dtype == torch.float32
    (q_file,) = (tmp_path / "onnx-int8").glob("*/model.onnx")
    ops = {n.op_type for n in onnx.load(str(q_file)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    out = rt.infer(x)
    with torch.no_grad():
        ref = model(x)
    assert torch.isfinite(out).all()
    assert _rel_err(out, ref) < 1.0  # the job's int8 tolerance
    assert (out.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.6

    _, again = _prepare(model, x, _ctx(tmp_path, "int8"))
    assert again.cache == "hit"


@pytest.mark.parametrize(("precision", "device"), [("bf16", "cpu"), ("tf32", "cpu"),
                                                   ("bf16", "cuda")])
def test_unsupported_precision_fails_at_once(tmp_path, precision, device):
    with pytest.raises(UnsupportedError) as e:
        create_runtime(OnnxRuntimeConfig(), _ctx(tmp_path, precision, device))
    msg = str(e.value)
    assert "runtime=onnx" in msg and f"precision={precision}" in msg and device in msg
    assert not any(tmp_path.iterdir())  # nothing exported


def test_channels_last_flag_still_feeds_nchw(tmp_path, model, x):
    rt, prep = _prepare(model, x, _ctx(tmp_path, channels_last=True))
    assert rt.input_memory_format == torch.contiguous_format
    assert "ignored" in prep.info["channels_last"]


# --- provider selection: pure functions, so the GPU cases run here too -------------------

CPU_BUILD = ["AzureExecutionProvider", CPU_EP]
GPU_BUILD = [TRT_EP, CUDA_EP, CPU_EP]


def test_providers_follow_the_device():
    assert select_providers("auto", "cpu", GPU_BUILD) == [CPU_EP]
    assert select_providers("cpu", "cpu", CPU_BUILD) == [CPU_EP]
    assert select_providers("auto", "cuda", GPU_BUILD) == [CUDA_EP, CPU_EP]
    assert select_providers("cuda", "cuda", [CUDA_EP, CPU_EP]) == [CUDA_EP, CPU_EP]
    assert select_providers("tensorrt", "cuda", GPU_BUILD) == [TRT_EP, CUDA_EP, CPU_EP]


@pytest.mark.parametrize("provider", ["auto", "cuda", "tensorrt"])
def test_gpu_job_with_the_cpu_build_says_what_to_install(provider):
    with pytest.raises(UnsupportedError) as e:
        select_providers(provider, "cuda", CPU_BUILD)
    assert GPU_INSTALL in str(e.value)
    assert "pip uninstall -y onnxruntime" in GPU_INSTALL and "onnxruntime-gpu" in GPU_INSTALL


def test_tensorrt_missing_says_what_to_install():
    with pytest.raises(UnsupportedError, match="TensorRT"):
        select_providers("tensorrt", "cuda", [CUDA_EP, CPU_EP])


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_gpu_provider_on_a_cpu_job_is_refused(provider):
    with pytest.raises(UnsupportedError, match="device=cuda"):
        select_providers(provider, "cpu", GPU_BUILD)


def test_cpu_provider_on_a_gpu_job_is_refused():
    with pytest.raises(UnsupportedError, match="device=cpu"):
        select_providers("cpu", "cuda", GPU_BUILD)


@pytest.mark.skipif(HAVE_CUDA_EP, reason="the GPU build of onnxruntime is installed here")
def test_gpu_job_here_fails_before_exporting(tmp_path, model, x):
    rt = create_runtime(OnnxRuntimeConfig(), _ctx(tmp_path, "fp16", "cuda"))
    assert isinstance(rt, OnnxRuntime)
    with pytest.raises(UnsupportedError) as e:
        rt.prepare(model, x)
    assert "onnxruntime-gpu" in str(e.value)
    assert not any(tmp_path.iterdir())


def test_cuda_options_fp32_means_tf32_off():
    cfg = OnnxRuntimeConfig()
    fp32 = provider_options(CUDA_EP, cfg, "fp32", 1)
    assert fp32["use_tf32"] == "0" and fp32["device_id"] == "1" and fp32["prefer_nhwc"] == "1"
    assert "enable_cuda_graph" not in fp32
    assert provider_options(CUDA_EP, cfg, "tf32", 0)["use_tf32"] == "1"
    # use_tf32=0 would also take the tensor cores from fp16 convolutions (cuDNN frontend):
    # only fp32 turns it off
    assert provider_options(CUDA_EP, cfg, "fp16", 0)["use_tf32"] == "1"
    assert provider_options(CUDA_EP, cfg, "int8", 0)["use_tf32"] == "1"
    graph = provider_options(CUDA_EP, OnnxRuntimeConfig(cuda_graph=True, prefer_nhwc=False),
                             "fp16", 0, stream=1234)
    assert graph["enable_cuda_graph"] == "1" and graph["prefer_nhwc"] == "0"
    assert graph["user_compute_stream"] == "1234"
    assert provider_options(CPU_EP, cfg, "fp32", 0) == {}


def test_tensorrt_options_follow_the_precision(tmp_path):
    opts = provider_options(TRT_EP, OnnxRuntimeConfig(), "int8", 0, shape=(8, 3, 224, 224),
                            engine_cache=tmp_path)
    assert opts["trt_int8_enable"] == "True" and opts["trt_fp16_enable"] == "False"
    assert opts["trt_profile_opt_shapes"] == "input:8x3x224x224"
    assert opts["trt_engine_cache_path"] == str(tmp_path)
