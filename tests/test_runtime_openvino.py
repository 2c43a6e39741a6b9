"""runtime=openvino with the real OpenVINO (and NNCF) on the CPU, on a torchvision model through
the shared ONNX export and on a user's ONNX file."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("openvino")

from sweep.accuracy import compare, make_decisive, synthetic_images  # noqa: E402
from sweep.cache import ArtifactCache  # noqa: E402
from sweep.config import RUNTIME_SCHEMAS, ModelConfig, OpenVinoRuntimeConfig  # noqa: E402
from sweep.errors import ConfigError, UnsupportedError  # noqa: E402
from sweep.model_files import open_onnx  # noqa: E402
from sweep.models import build_model  # noqa: E402
from sweep.runtimes import JobContext, check_supported, create_runtime  # noqa: E402
from sweep.runtimes.onnx_export import check_file_precision  # noqa: E402
from sweep.runtimes.openvino import OpenVinoRuntime, compile_config  # noqa: E402

RES, BATCH = 32, 4


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    m = build_model(ModelConfig(name="resnet18", num_classes=10))
    make_decisive(m, synthetic_images(16, RES, 1))
    return m


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return synthetic_images(BATCH, RES, 0)


@pytest.fixture(scope="module")
def ref(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _ctx(cache, precision="fp32", batch=BATCH, input_dtype=None) -> JobContext:
    return JobContext(device=torch.device("cpu"), precision=precision, batch=batch,
                      resolution=RES, channels_last=False, cache=ArtifactCache(cache),
                      input_dtype=input_dtype)


def _prepare(model, x, ctx, cfg=None):
    ctx.model_identity = ArtifactCache.model_identity(ModelConfig(), model)
    rt = create_runtime(cfg or OpenVinoRuntimeConfig(), ctx)
    return rt, rt.prepare(model, x)


def test_registered_and_refused_on_cuda():
    assert RUNTIME_SCHEMAS["openvino"] is OpenVinoRuntimeConfig
    with pytest.raises(UnsupportedError, match="runtime=openvino cannot run precision=fp32 on "
                                               "cuda; it supports cpu: fp32, bf16, int8"):
        check_supported(OpenVinoRuntimeConfig(), torch.device("cuda"), "fp32")
    with pytest.raises(UnsupportedError, match="cannot run precision=fp16"):
        OpenVinoRuntime.check_supported(torch.device("cpu"), "fp16")


def test_bad_options_name_the_key():
    with pytest.raises(ConfigError, match="runtime.hint='fast'.*latency, throughput"):
        OpenVinoRuntimeConfig(hint="fast")
    with pytest.raises(ConfigError, match="runtime.device='NPU'"):
        OpenVinoRuntimeConfig(device="NPU")
    with pytest.raises(ConfigError, match="runtime.streams"):
        OpenVinoRuntimeConfig(streams=-1)


def test_compile_config_follows_the_options():
    cfg = OpenVinoRuntimeConfig(hint="throughput", streams=3, threads=2)
    assert compile_config(cfg, "bf16", None) == {
        "PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "bf16",
        "NUM_STREAMS": "3", "INFERENCE_NUM_THREADS": "2"}
    assert "NUM_STREAMS" not in compile_config(OpenVinoRuntimeConfig(), "fp32", None)


def test_fp32_matches_torch_and_the_second_prepare_loads_both_caches(tmp_path, model, x, ref):
    rt, prep = _prepare(model, x, _ctx(tmp_path))
    assert prep.cache == "miss" and prep.info["openvino_compiled_cache"] == "miss"
    assert prep.info["openvino_precision"] == "f32"
    check = compare(ref, rt.infer(x), "fp32")
    assert check.passed, check.reason
    rt.close()
    # the ONNX export is shared with runtime=onnx: one entry under onnx/
    assert len(list((tmp_path / "onnx").glob("*/model.onnx"))) == 1
    rt, again = _prepare(model, x, _ctx(tmp_path))
    assert again.cache == "hit" and again.info["openvino_compiled_cache"] == "hit"
    assert compare(ref, rt.infer(x), "fp32").passed


def test_hint_streams_and_threads_reach_the_compiled_model(tmp_path, model, x):
    cfg = OpenVinoRuntimeConfig(hint="throughput", streams=2)
    _, prep = _prepare(model, x, _ctx(tmp_path), cfg)
    assert prep.info["openvino_streams"] == "2"
    _, prep = _prepare(model, x, _ctx(tmp_path), OpenVinoRuntimeConfig(threads=1))
    assert prep.info["openvino_threads"] == "1"
    assert prep.info["openvino_streams"] == "1"  # hint=latency


def test_an_intel_gpu_that_is_not_here_is_refused(tmp_path, model, x):
    import openvino as ov

    if "GPU" in ov.Core().available_devices:
        pytest.skip("this machine has an Intel GPU")
    with pytest.raises(UnsupportedError, match="runtime.device=GPU is not available here"):
        _prepare(model, x, _ctx(tmp_path), OpenVinoRuntimeConfig(device="GPU"))


def test_bf16_runs_where_the_cpu_has_it(tmp_path, model, x, ref):
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(UnsupportedError, match="bf16 support"):
            _prepare(model, x, _ctx(tmp_path, "bf16"))
        return
    rt, prep = _prepare(model, x, _ctx(tmp_path, "bf16"))
    assert rt.input_dtype == torch.float32  # a compute hint: fp32 in and out
    check = compare(ref, rt.infer(x), "bf16")
    assert check.passed, check.reason


def test_int8_by_nncf_runs_and_its_agreement_is_reported(tmp_path, model, x, ref):
    rt, prep = _prepare(model, x, _ctx(tmp_path, "int8"))
    assert prep.cache == "miss" and "NNCF" in prep.info["quant"]
    (ir,) = (tmp_path / "openvino-int8").glob("*/model.xml")
    assert "FakeQuantize" in ir.read_text()  # quantised, not the fp32 model under a new name
    check = compare(ref, rt.infer(x), "int8")
    assert check.samples == BATCH and check.rel_err < 1.5  # the job's int8 tolerance
    assert check.agreement_top1_pct >= 50 or check.decisive_pct == 0, check.reason
    _, again = _prepare(model, x, _ctx(tmp_path, "int8"))
    assert again.cache == "hit"


def test_a_users_onnx_file_runs_as_it_is(tmp_path, model, x, ref):
    half = tmp_path / "half.onnx"
    torch.onnx.export(copy.deepcopy(model).half(), (x.half(),), str(half), dynamo=False)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["pixels"], dynamo=False)  # static
    onnx_model = open_onnx(ModelConfig(kind="onnx", path=str(path)))
    ctx = _ctx(tmp_path / "cache", input_dtype=onnx_model.input.torch_dtype)
    ctx.model_identity = onnx_model.identity("m")
    rt = create_runtime(OpenVinoRuntimeConfig(), ctx)
    prep = rt.prepare(onnx_model, x)
    assert prep.cache == "none"  # nothing exported: the file itself
    check = compare(onnx_model.reference(x, BATCH), rt.infer(x), "fp32")
    assert check.passed, check.reason
    assert compare(ref, rt.infer(x), "fp32").passed
    with pytest.raises(UnsupportedError, match="int8 quantises an fp32 file"):
        check_file_precision("openvino", open_onnx(ModelConfig(kind="onnx", path=str(half))),
                             "int8", ("fp32", "bf16", "int8"))
