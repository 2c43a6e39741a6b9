"""Bring your own model: ONNX files and torch.export programs read and checked, FLOPs counted
from the ONNX graph, the refusals of runtimes that cannot run a file, timm by name; and real
multiruns of each kind through the runtimes that run it."""

from __future__ import annotations

import json
import math

import onnx
import pytest
import torch
from conftest import QUICK, only_sweep_dir, run_cli
from onnx import TensorProto, helper
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sweep.accuracy import make_decisive, synthetic_images
from sweep.config import (
    CompileRuntimeConfig,
    ModelConfig,
    OnnxRuntimeConfig,
    OpenVinoRuntimeConfig,
    TorchRuntimeConfig,
    TrtRuntimeConfig,
)
from sweep.errors import ConfigError, UnsupportedError
from sweep.model_files import count_onnx_gflop, load_exported, open_onnx
from sweep.models import build_model, check_resolution, native_resolution
from sweep.runtimes import check_model


class Tiny(nn.Module):
    """A small classifier whose predictions depend on the input (make_decisive): quick to
    export, compile and check."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def tiny() -> nn.Module:
    torch.manual_seed(0)
    model = Tiny().eval()
    make_decisive(model, synthetic_images(16, 32, 1))
    return model


def export(path, batch: int | None, dtype=torch.float32, resolution: int = 32):
    """An ONNX file of `tiny()` with a static batch, or a dynamic one (batch=None)."""
    model = tiny().to(dtype)
    x = torch.zeros(batch or 2, 3, resolution, resolution, dtype=dtype)
    axes = None if batch else {"images": {0: "n"}, "scores": {0: "n"}}
    torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["scores"],
                      dynamic_axes=axes, dynamo=False)
    return path


def graph_file(path, inputs, nodes=(), outputs=None, inits=()):
    """A hand-made ONNX file (one Identity when no nodes are given)."""
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])]
    nodes = list(nodes) or [helper.make_node("Identity", [inputs[0].name], ["y"])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def onnx_cfg(path) -> ModelConfig:
    return ModelConfig(kind="onnx", name="file", path=str(path))


# --- reading ONNX files -------------------------------------------------------------------


def test_input_name_dtype_and_batch_are_read_from_the_file(tmp_path):
    static = open_onnx(onnx_cfg(export(tmp_path / "s.onnx", batch=2)))
    dynamic = open_onnx(onnx_cfg(export(tmp_path / "d.onnx", batch=None)))
    assert (static.input.name, static.input.batch, static.input.height) == ("images", 2, 32)
    assert dynamic.input.batch is None and dynamic.input.dtype == "float32"
    assert static.output_name == "scores"
    static.input.check_job("s.onnx", 2, 32)
    dynamic.input.check_job("d.onnx", 7, 32)  # any batch fits a dynamic axis
    half = open_onnx(onnx_cfg(export(tmp_path / "h.onnx", batch=None, dtype=torch.float16)))
    assert half.input.dtype == "float16" and half.input.torch_dtype == torch.float16


def test_a_static_batch_that_differs_from_batch_names_both(tmp_path):
    model = open_onnx(onnx_cfg(export(tmp_path / "s.onnx", batch=2)))
    with pytest.raises(ConfigError) as e:
        model.input.check_job("s.onnx", 4, 32)
    assert "batch=4" in str(e.value) and "static batch of 2" in str(e.value)
    assert "batch=2" in str(e.value)  # what to type
    with pytest.raises(ConfigError) as e:
        model.input.check_job("s.onnx", 2, 64)
    assert "resolution=64" in str(e.value) and "resolution=32" in str(e.value)


def test_missing_empty_truncated_and_foreign_files_say_why(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        open_onnx(onnx_cfg(tmp_path / "nothing.onnx"))
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="empty"):
        open_onnx(onnx_cfg(tmp_path / "empty.onnx"))
    good = export(tmp_path / "good.onnx", batch=None).read_bytes()
    (tmp_path / "cut.onnx").write_bytes(good[: len(good) // 2])
    with pytest.raises(ConfigError, match="truncated"):
        open_onnx(onnx_cfg(tmp_path / "cut.onnx"))
    (tmp_path / "text.onnx").write_text("name,value\nresnet,1\n")
    with pytest.raises(ConfigError, match="not .*ONNX"):
        open_onnx(onnx_cfg(tmp_path / "text.onnx"))


@pytest.mark.parametrize("shape, elem, reason", [
    ([1, 3, 32, 32], TensorProto.INT64, "int64"),
    ([1, 32, 32, 3], TensorProto.FLOAT, "NHWC"),
    ([1, 1, 32, 32], TensorProto.FLOAT, "1 channels"),
    ([1, 3, 32], TensorProto.FLOAT, "rank 4"),
])
def test_an_input_the_tool_cannot_feed_is_refused_with_the_reason(tmp_path, shape, elem, reason):
    inp = helper.make_tensor_value_info("x", elem, shape)
    path = graph_file(tmp_path / "m.onnx", [inp], outputs=[
        helper.make_tensor_value_info("y", elem, shape)])
    with pytest.raises(ConfigError, match=reason):
        open_onnx(onnx_cfg(path))


def test_a_non_square_input_is_read_as_height_and_width(tmp_path):
    """Issue 33: a file's declared [height, width] is the job's resolution when it is unset, and
    a typed resolution that contradicts it names both."""
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 16])
    path = graph_file(tmp_path / "m.onnx", [inp], outputs=[
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 16])])
    spec = open_onnx(onnx_cfg(path)).input
    assert spec.native_resolution("m.onnx")[0] == [32, 16]
    spec.check_job("m.onnx", 1, [32, 16])
    with pytest.raises(ConfigError, match=r"static width of 16.*resolution=\[32,16\]"):
        spec.check_job("m.onnx", 1, 32)


def test_two_inputs_are_refused(tmp_path):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3, 8, 8])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3, 8, 8])
    node = helper.make_node("Add", ["a", "b"], ["y"])
    path = graph_file(tmp_path / "m.onnx", [a, b], [node],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    with pytest.raises(ConfigError, match="2 inputs"):
        open_onnx(onnx_cfg(path))


# --- FLOPs from the graph ------------------------------------------------------------------


def test_flops_of_one_conv_and_one_gemm_are_counted_by_hand(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.0] * 108)
    fc = helper.make_tensor("fc", TensorProto.FLOAT, [256, 10], [0.0] * 2560)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"])]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])
    path = graph_file(tmp_path / "m.onnx", [x], nodes, [y], [w, fc])
    gflop, unresolved = count_onnx_gflop(open_onnx(onnx_cfg(path)), 8)
    conv = 2 * (4 * 8 * 8) * (3 * 3 * 3)  # per output element: C_in x kH x kW multiply-adds
    gemm = 2 * 10 * 256
    assert unresolved == 0
    assert gflop * 1e9 == pytest.approx(conv + gemm)


def test_flops_of_an_export_match_torchs_counter(tmp_path):
    import torchvision

    model = torchvision.models.resnet18(num_classes=10).eval()
    torch.onnx.export(model, (torch.zeros(2, 3, 64, 64),), str(tmp_path / "r.onnx"),
                      input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    gflop, unresolved = count_onnx_gflop(open_onnx(onnx_cfg(tmp_path / "r.onnx")), 64)
    assert unresolved == 0
    assert gflop == pytest.approx(counter.get_total_flops() / 1e9, rel=0.01)


# --- torch.export programs ------------------------------------------------------------------


def test_an_exported_program_is_loaded_with_its_input(tmp_path):
    torch.export.save(torch.export.export(tiny(), (torch.zeros(2, 3, 32, 32),)),
                      str(tmp_path / "m.pt2"))
    module, spec, info = load_exported(ModelConfig(kind="exported", path=str(tmp_path / "m.pt2")))
    assert (spec.batch, spec.channels, spec.height) == (2, 3, 32)
    assert module(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert len(info["model_file_sha256"]) == 16
    with pytest.raises(ConfigError, match="static batch of 2"):
        spec.check_job("m.pt2", 3, 32)


def test_bad_exported_files_say_why(tmp_path):
    (tmp_path / "a.pt2").write_text("not a zip")
    with pytest.raises(ConfigError, match="not a torch.export program"):
        load_exported(ModelConfig(kind="exported", path=str(tmp_path / "a.pt2")))
    torch.save({"w": torch.zeros(2)}, tmp_path / "b.pt2")  # a zip, but a state dict
    with pytest.raises(ConfigError, match="torch.export.load"):
        load_exported(ModelConfig(kind="exported", path=str(tmp_path / "b.pt2")))
    with pytest.raises(ConfigError, match="no such file"):
        load_exported(ModelConfig(kind="exported", path=str(tmp_path / "c.pt2")))


# --- config and refusals ----------------------------------------------------------------------


def test_model_config_says_what_a_kind_needs():
    with pytest.raises(ConfigError, match="model.path=None.*model=onnx model.path=model.onnx"):
        ModelConfig(kind="onnx")
    with pytest.raises(ConfigError, match="model=onnx or model=exported"):
        ModelConfig(kind="torchvision", path="m.onnx")
    with pytest.raises(ConfigError, match="weights of model=onnx are in its file"):
        ModelConfig(kind="onnx", path="m.onnx", weights="w.pth")
    with pytest.raises(ConfigError, match="allowed values are torchvision, timm, onnx"):
        ModelConfig(kind="keras")


@pytest.mark.parametrize("runtime", [TorchRuntimeConfig(), CompileRuntimeConfig()])
def test_torch_runtimes_refuse_an_onnx_file_naming_those_that_can(runtime):
    with pytest.raises(UnsupportedError) as e:
        check_model(runtime, "onnx")
    assert f"runtime={runtime.name} cannot run model=onnx" in str(e.value)
    assert "the runtimes that can: onnx, trt, openvino" in str(e.value)


def test_which_runtime_runs_which_kind():
    for kind in ("torchvision", "timm", "exported", "onnx"):
        check_model(OnnxRuntimeConfig(), kind)
        check_model(OpenVinoRuntimeConfig(), kind)
    check_model(TrtRuntimeConfig(), "onnx")  # TensorRT's own parser (not run here)
    with pytest.raises(UnsupportedError, match="runtime=trt cannot run model=exported"):
        check_model(TrtRuntimeConfig(), "exported")


# --- timm --------------------------------------------------------------------------------------


def test_timm_by_name_without_download():
    model = build_model(ModelConfig(kind="timm", name="test_resnet", num_classes=10))
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ConfigError, match="not a timm model.*test_resnet"):
        build_model(ModelConfig(kind="timm", name="test_resnez"))


def test_the_models_own_resolution_and_where_it_comes_from():
    side, source = native_resolution(ModelConfig(kind="timm", name="test_resnet"))
    assert (side, source) == (160, "timm's default config of test_resnet: input_size "
                                    "(3, 160, 160)")
    assert native_resolution(ModelConfig(name="vit_b_16"))[0] == 224
    # the sweep's resolution is square: a timm default that is not says what to set
    with pytest.raises(ConfigError, match=r"resolution=null .*1024x768 .*resolution=1024"):
        native_resolution(ModelConfig(kind="timm", name="vit_base_patch16_sapiens2"))
    with pytest.raises(ConfigError, match="not a timm model"):
        native_resolution(ModelConfig(kind="timm", name="test_resnez"))
    # a timm model that takes only its own size refuses another before anything is built
    with pytest.raises(ConfigError, match=r"resolution=32 .*test_vit takes only .*160x160.*"
                                          r"Use resolution=160"):
        check_resolution(ModelConfig(kind="timm", name="test_vit"), 32)
    check_resolution(ModelConfig(kind="timm", name="test_vit"), 160)
    check_resolution(ModelConfig(kind="timm", name="test_resnet"), 32)  # any size


def test_a_files_own_resolution_is_its_declared_size(tmp_path):
    from sweep.config import SweepConfig
    from sweep.job import resolve_resolution

    def resolved(path, **kwargs):
        cfg = SweepConfig(runtime=OnnxRuntimeConfig(), **kwargs,
                          model=ModelConfig(kind="onnx", name="f", path=str(path)))
        return resolve_resolution(cfg) if cfg.resolution is None else "set", cfg.resolution

    source, side = resolved(export(tmp_path / "s48.onnx", batch=None, resolution=48))
    assert side == 48 and source.startswith("the static input of model.path=")
    dynamic = tmp_path / "dyn.onnx"
    graph_file(dynamic, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                       ["n", 3, "h", "w"])])
    source, side = resolved(dynamic)
    assert side == 224 and "takes any size" in source and "resolution=N" in source
    assert resolved(dynamic, resolution=64) == ("set", 64)
    torch.export.save(torch.export.export(tiny(), (torch.zeros(2, 3, 40, 40),)),
                      str(tmp_path / "p.pt2"))
    cfg = SweepConfig(runtime=OnnxRuntimeConfig(),
                      model=ModelConfig(kind="exported", name="p", path=str(tmp_path / "p.pt2")))
    assert "static input" in resolve_resolution(cfg) and cfg.resolution == 40
    huge = tmp_path / "huge.onnx"  # a declared size past the bound a typed resolution has
    graph_file(huge, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9000, 9000])])
    with pytest.raises(ConfigError, match=r"resolution=9000 is not valid: .* 8\.\.8192 pixels"):
        resolved(huge)


# --- real multiruns ------------------------------------------------------------------------------


def _results(root):
    return {p.parent.name.split("_", 1)[1]: json.loads(p.read_text())
            for p in only_sweep_dir(root).glob("*/result.json")}


@pytest.mark.slow
def test_onnx_files_on_onnx_and_openvino_and_the_refusals(tmp_path, cache_dir):
    """Static and dynamic batch files run with correctness metrics and a truncated file fails its
    jobs with the reason (one multirun: one start-up); runtime=torch is refused before any job."""
    export(tmp_path / "static2.onnx", batch=2)
    export(tmp_path / "dyn.onnx", batch=None)
    (tmp_path / "cut.onnx").write_bytes((tmp_path / "static2.onnx").read_bytes()[:300])
    refused = run_cli(["-m", "model=onnx", "model.path=static2.onnx", "runtime=onnx,torch",
                       "tracking.enabled=false", *QUICK], tmp_path, cache_dir)
    assert refused.returncode == 2 and not (tmp_path / "multirun").exists()
    assert "runtime=torch cannot run model=onnx" in refused.stderr
    assert "the runtimes that can: onnx, trt, openvino" in refused.stderr
    proc = run_cli(["-m", "model=onnx", "model.path=static2.onnx,dyn.onnx,cut.onnx",
                    "runtime=onnx,openvino", "batch=2", "device=cpu",
                    "tracking.enabled=false", *QUICK], tmp_path, cache_dir)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the truncated jobs
    results = _results(tmp_path)
    assert len(results) == 6
    for runtime in ("onnx", "openvino"):
        for stem in ("static2", "dyn"):
            job = f"{runtime}-{stem}-32-b2-fp32"
            r = results[job]
            assert r["status"] == "ok", (job, r["error"])
            assert r["metrics"]["correct"] == 1.0, (job, r["info"]["correctness"])
            assert r["metrics"]["decisive_pct"] > 0
            assert r["metrics"]["agreement_top1_pct"] == 100
            assert r["params"]["model.kind"] == "onnx"
            assert r["info"]["model_input"].startswith("images: NCHW")
            # conv 3->8 at 32x32, conv 8->16 stride 2, linear 16->10 (2 FLOPs per multiply-add)
            expected = 2 * (8 * 32 * 32 * 27 + 16 * 16 * 16 * 72 + 10 * 16)
            assert r["metrics"]["gflop_per_img"] * 1e9 == pytest.approx(expected)
            assert r["metrics"]["fps"] > 0
        assert "truncated" in results[f"{runtime}-cut-32-b2-fp32"]["error"]


@pytest.mark.slow
def test_exported_program_through_torch_compile_and_onnx(tmp_path, cache_dir):
    torch.export.save(torch.export.export(tiny(), (torch.zeros(2, 3, 32, 32),)),
                      str(tmp_path / "tiny.pt2"))
    proc = run_cli(["-m", "model=exported", "model.path=tiny.pt2", "runtime=torch,compile,onnx",
                    "batch=2", "device=cpu", "tracking.enabled=false", *QUICK],
                   tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(tmp_path)
    assert sorted(results) == ["compile-tiny-32-b2-fp32", "onnx-tiny-32-b2-fp32",
                               "torch-tiny-32-b2-fp32"]
    for job, r in results.items():
        assert r["metrics"]["correct"] == 1.0, (job, r["error"], r["info"].get("correctness"))
        assert r["metrics"]["decisive_pct"] > 0


@pytest.mark.slow
def test_timm_model_through_a_multirun(tmp_path, cache_dir):
    """resolution=null is the timm model's own (160 for test_efficientnet), in the job's
    params, name, config.yaml and info; resolution=32 still overrides it."""
    quick = [o for o in QUICK if not o.startswith("resolution=")]
    proc = run_cli(["-m", "model=timm", "model.name=test_efficientnet", "runtime=torch,onnx",
                    "resolution=null,32", "batch=2", "device=cpu", "tracking.enabled=false",
                    *quick], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(tmp_path)
    assert sorted(results) == [f"{rt}-timm-test_efficientnet-{side}-b2-fp32"
                               for rt in ("onnx", "torch") for side in (160, 32)]
    for job, r in results.items():
        assert r["metrics"]["correct"] == 1.0 and r["metrics"]["decisive_pct"] > 0
        assert r["metrics"]["gflop_per_img"] > 0 and not math.isnan(r["metrics"]["fps"])
        side = int(job.split("-")[3])  # onnx-timm-test_efficientnet-160-...
        assert r["params"]["resolution"] == side
        if side == 160:
            assert r["info"]["resolution_from"] == ("timm's default config of "
                                                    "test_efficientnet: input_size (3, 160, 160)")
        else:
            assert r["info"]["resolution_from"] == "set: resolution=32"
    for folder in only_sweep_dir(tmp_path).glob("*_*-timm-test_efficientnet-*"):
        side = int(folder.name.split("-")[3])
        assert f"\nresolution: {side}\n" in (folder / "config.yaml").read_text()
    flops = {job: r["metrics"]["gflop_per_img"] for job, r in results.items()}
    assert flops["torch-timm-test_efficientnet-160-b2-fp32"] > 20 * flops[
        "torch-timm-test_efficientnet-32-b2-fp32"]  # (160/32)^2 = 25 times the pixels


# --- a user's file on the runtimes, in the process -------------------------------------------


def _file_runtime(cfg, model, cache, precision="fp32", batch=2):
    from sweep.cache import ArtifactCache
    from sweep.runtimes import JobContext, create_runtime

    ctx = JobContext(device=torch.device("cpu"), precision=precision, batch=batch, resolution=32,
                     channels_last=False, cache=ArtifactCache(cache),
                     model_identity=model.identity("m"), input_dtype=model.input.torch_dtype)
    rt = create_runtime(cfg, ctx)
    return rt, rt.prepare(model, torch.zeros(batch, 3, 32, 32))


@pytest.mark.parametrize("cfg", [OnnxRuntimeConfig(), OpenVinoRuntimeConfig()])
def test_an_fp16_file_runs_in_its_own_types_against_itself(tmp_path, cfg):
    from sweep.accuracy import compare

    model = open_onnx(onnx_cfg(export(tmp_path / "h.onnx", batch=None, dtype=torch.float16)))
    rt, _ = _file_runtime(cfg, model, tmp_path / "cache")
    assert rt.input_dtype == torch.float16
    x = synthetic_images(4, 32, 0)
    out = torch.cat([rt.infer(c.half()) for c in x.split(2)])
    check = compare(model.reference(x, 2), out.float(), "fp16")
    assert check.passed, check.reason


def test_onnx_runtime_quantises_a_users_file_with_its_input_name(tmp_path):
    from sweep.accuracy import compare

    model = open_onnx(onnx_cfg(export(tmp_path / "s.onnx", batch=2)))
    rt, prep = _file_runtime(OnnxRuntimeConfig(calibration_batches=2), model,
                             tmp_path / "cache", "int8")
    assert prep.cache == "miss" and "2x2 synthetic images" in prep.info["quant"]
    (q,) = (tmp_path / "cache" / "onnx-int8-file").glob("*/model.onnx")
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(q)).graph.node}
    x = synthetic_images(4, 32, 0)
    out = torch.cat([rt.infer(c) for c in x.split(2)])
    check = compare(model.reference(x, 2), out, "int8")
    assert check.rel_err < 1.5, check.reason  # the job's int8 tolerance
    with pytest.raises(UnsupportedError, match="precision=fp16 would convert the file"):
        _file_runtime(OnnxRuntimeConfig(), model, tmp_path / "cache", "fp16")


def test_ort_tensorrt_profile_names_the_files_input():
    from sweep.runtimes.ort import TRT_EP, provider_options

    opts = provider_options(TRT_EP, OnnxRuntimeConfig(), "fp16", 0, shape=(2, 3, 32, 32),
                            input_name="images")
    assert opts["trt_profile_opt_shapes"] == "images:2x3x32x32"


class _Plant:
    """Unpickling it runs a command: the payload of a crafted model file."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _rewrite(src, dst, replace: dict) -> None:
    """A copy of zip `src` with the members named in `replace` (by suffix) given new bytes."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            for suffix, new in replace.items():
                if item.filename.endswith(suffix):
                    data = new(data)
            zout.writestr(item, data)


@pytest.mark.parametrize("planted", ["weight", "sample_inputs"])
def test_a_pickle_planted_in_an_exported_program_never_runs(tmp_path, planted):
    """A .pt2 whose weight is marked as pickled, or whose sample inputs are a pickle, that would
    run a command when torch.export.load unpickles it: refused before anything is loaded."""
    import io

    clean, bad, marker = tmp_path / "m.pt2", tmp_path / "bad.pt2", tmp_path / "ran"
    torch.export.save(torch.export.export(tiny(), (torch.zeros(2, 3, 32, 32),)), str(clean))
    payload = io.BytesIO()
    torch.save(_Plant(marker), payload)
    if planted == "weight":
        def mark(data: bytes) -> bytes:
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            return json.dumps(config).encode()

        first_weight = json.loads(_member(clean, "model_weights_config.json"))["config"]
        path = next(iter(first_weight.values()))["path_name"]
        _rewrite(clean, bad, {"model_weights_config.json": mark,
                              f"weights/{path}": lambda _: payload.getvalue()})
    else:
        _rewrite(clean, bad, {"sample_inputs/model.pt": lambda _: payload.getvalue()})
    with pytest.raises(ConfigError, match="safe loader .* could run code"):
        load_exported(ModelConfig(kind="exported", path=str(bad)))
    assert not marker.exists()
    load_exported(ModelConfig(kind="exported", path=str(clean)))  # the clean file still loads


def _member(archive, suffix: str) -> bytes:
    import zipfile

    with zipfile.ZipFile(archive) as z:
        return z.read(next(n for n in z.namelist() if n.endswith(suffix)))
