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


# --- model=onnx: the user's file, built by TensorRT's own ONNX parser ----------------------------

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
TRT_PIP = "TensorRT is not installed: pip install tensorrt"


def _file(tmp_path, name="m.onnx", dims=("n", 3, 32, 32), qdq=False, elem=None):
    """A small ONNX classifier file (conv, pool, gemm), with a Q/DQ pair on its input if asked."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = elem or TensorProto.FLOAT
    rng = np.random.default_rng(0)
    dtype = np.float16 if elem == TensorProto.FLOAT16 else np.float32
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(dtype), n) for n, s in
             (("w", (4, 3, 3, 3)), ("fc", (4, 10)))]
    first, nodes = "x", []
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"])]
        first = "xd"
    nodes += [helper.make_node("Conv", [first, "w"], ["c"]),
              helper.make_node("GlobalAveragePool", ["c"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("MatMul", ["f", "fc"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, list(dims))],
                              [helper.make_tensor_value_info("logits", elem, [dims[0], 10])],
                              initializer=inits)
    path = tmp_path / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _open(path):
    from sweep.config import ModelConfig
    from sweep.model_files import open_onnx

    return open_onnx(ModelConfig(kind="onnx", name="m", path=str(path)))


@pytest.mark.skipif(HAVE_TENSORRT, reason="tensorrt is installed here")
def test_an_onnx_file_takes_tensorrts_own_path_and_names_what_is_missing(tmp_path):
    """runtime=trt with model=onnx asks for TensorRT itself (not Torch-TensorRT): on a CUDA
    device the check passes the GPU test and stops at the import, naming the pip command."""
    model = _open(_file(tmp_path))
    rt = TensorRTRuntime(TrtRuntimeConfig(), JobContext(
        device=torch.device("cuda"), precision="fp16", batch=2, resolution=32,
        channels_last=False, cache=ArtifactCache(tmp_path / "cache"),
        model_identity=model.identity("m"), input_dtype=torch.float32, model_kind="onnx"))
    with pytest.raises(UnsupportedError) as e:
        rt.prepare(model, torch.zeros(2, 3, 32, 32))
    msg = str(e.value)
    assert msg.startswith(TRT_PIP) and "TensorRT's own ONNX parser" in msg
    assert "torch-tensorrt" not in msg and "NVIDIA GPU" not in msg
    with pytest.raises(UnsupportedError, match=TRT_PIP):  # what create_runtime checks at once
        TensorRTRuntime.check_supported(torch.device("cuda"), "int8", "onnx")


@pytest.mark.skipif(HAVE_TENSORRT, reason="tensorrt is installed here")
def test_an_onnx_file_job_on_the_cpu_fails_with_both_reasons(tmp_path):
    from sweep.config import ModelConfig
    from sweep.job import run_job

    cfg = SweepConfig(runtime=TrtRuntimeConfig(), resolution=32, batch=2, device="cpu",
                      model=ModelConfig(kind="onnx", name="m", path=str(_file(tmp_path))),
                      tracking=TrackingConfig(enabled=False), cache_dir=str(tmp_path / "cache"))
    result = run_job(cfg, tmp_path / "job")
    assert result.status == "failed"
    assert "needs an NVIDIA GPU" in result.error and TRT_PIP in result.error
    assert "torch-tensorrt" not in result.error  # the file needs TensorRT, not Torch-TensorRT


def test_build_plan_per_precision(tmp_path):
    from sweep.runtimes.tensorrt_onnx import build_plan

    model = _open(_file(tmp_path))
    assert build_plan(model, "fp32") == {"strongly_typed": True, "set": [], "clear": ["TF32"]}
    assert build_plan(model, "tf32") == {"strongly_typed": True, "set": ["TF32"], "clear": []}
    assert build_plan(model, "fp16") == {"strongly_typed": False, "set": ["FP16"], "clear": []}
    assert build_plan(model, "bf16")["set"] == ["BF16"]
    with pytest.raises(UnsupportedError, match=r"precision=int8 .*has none: quantise it to Q/DQ"):
        build_plan(model, "int8")  # no Q/DQ nodes: TensorRT 10 would have to calibrate it
    qdq = _open(_file(tmp_path, "q.onnx", qdq=True))
    assert build_plan(qdq, "int8") == {"strongly_typed": True, "set": [], "clear": ["TF32"]}


def test_a_half_file_runs_as_it_is_not_as_fp16(tmp_path):
    from onnx import TensorProto

    from sweep.runtimes.tensorrt_onnx import build_plan

    half = _open(_file(tmp_path, "h.onnx", elem=TensorProto.FLOAT16))
    assert build_plan(half, "fp32")["strongly_typed"]  # in the file's own types
    with pytest.raises(UnsupportedError, match="takes float16 input already: use precision=fp32"):
        build_plan(half, "fp16")


def test_profile_shapes_from_the_files_input(tmp_path):
    from sweep.runtimes.tensorrt_onnx import profile_shapes

    dynamic = _open(_file(tmp_path)).input
    assert profile_shapes(dynamic, 8, 32) == ((8, 3, 32, 32),) * 3  # min = opt = max
    static = _open(_file(tmp_path, "s.onnx", dims=(2, 3, 32, 32))).input
    assert profile_shapes(static, 2, 32) is None
    sized = _open(_file(tmp_path, "d.onnx", dims=(4, 3, "h", "w"))).input
    assert profile_shapes(sized, 4, 64) == ((4, 3, 64, 64),) * 3


def test_engine_cache_key_names_the_file_shape_precision_and_build(tmp_path):
    from sweep.runtimes.tensorrt_onnx import build_plan, engine_parts

    env = {"tensorrt": "10.13.0", "gpu": "NVIDIA H200", "compute_capability": "9.0"}
    model = _open(_file(tmp_path))
    other = _open(_file(tmp_path, "other.onnx", qdq=True))
    assert model.sha256 != other.sha256

    default = TrtRuntimeConfig()

    def k(m=model, precision="fp32", batch=2, resolution=32, cfg=default, env=env):
        ctx = JobContext(device=torch.device("cuda"), precision=precision, batch=batch,
                         resolution=resolution, channels_last=False, cache=None,
                         model_identity=m.identity("m"), input_dtype=torch.float32,
                         model_kind="onnx")
        return ArtifactCache.key(engine_parts(cfg, ctx, build_plan(m, precision), env))

    base = k()
    assert k() == base
    variants = [k(m=other), k(precision="tf32"), k(precision="fp16"), k(batch=8),
                k(resolution=64), k(cfg=TrtRuntimeConfig(workspace_gb=8)),
                k(cfg=TrtRuntimeConfig(optimization_level=5)),
                k(env={**env, "tensorrt": "10.14.0"}), k(env={**env, "gpu": "NVIDIA A100"})]
    assert len({base, *variants}) == len(variants) + 1
    ctx = JobContext(device=torch.device("cuda"), precision="fp32", batch=2, resolution=32,
                     channels_last=False, cache=None, model_identity=model.identity("m"))
    parts = engine_parts(TrtRuntimeConfig(), ctx, build_plan(model, "fp32"), env)
    assert parts["file"] == model.sha256 and "torch_tensorrt" not in parts
