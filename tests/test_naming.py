"""One naming rule for a job's folder (result.job_name) and its MLflow run (result.run_name, the
same parts with what the sweep varies first), and the name of a sweep's parent run
(result.sweep_name): every swept param tells jobs apart."""

from __future__ import annotations

from pathlib import Path

from sweep.config import ModelConfig, SweepConfig, TorchRuntimeConfig
from sweep.result import flatten, job_name, run_name, sweep_label, sweep_name, swept_keys


def _params(**overrides) -> dict:
    return {**flatten(SweepConfig(runtime=TorchRuntimeConfig(), resolution=32)), **overrides}


def test_pipelines_flags_and_other_swept_params_give_distinct_names():
    base = _params(data="imagefolder")
    names = {job_name({**base, "pipeline": p, "flags.pin_memory": pin})
             for p in ("current", "fast") for pin in (True, False)}
    assert names == {"torch-resnet18-32-b1-fp32-current", "torch-resnet18-32-b1-fp32-current-pin",
                     "torch-resnet18-32-b1-fp32-fast", "torch-resnet18-32-b1-fp32-fast-pin"}
    swept = swept_keys(["check.enabled=true,false", "device=cpu", "batch=1,2"])
    assert swept == ["check.enabled", "batch"]
    a = job_name(_params(**{"check.enabled": True}), swept)
    b = job_name(_params(**{"check.enabled": False}), swept)
    assert (a, b) == ("torch-resnet18-32-b1-fp32-check.enabled_True",
                      "torch-resnet18-32-b1-fp32-check.enabled_False")
    assert job_name(_params(), ["batch"]) == "torch-resnet18-32-b1-fp32"  # shown already
    assert "/" not in job_name(_params(**{"data.root": "a/b c"}), ["data.root"])


def test_sweep_name_says_what_varies_before_the_folder():
    d = Path("multirun/2026-12-01/20-43-13")
    assert sweep_name(d, ["runtime=torch,onnx", "batch=1,8", "resolution=32"]) == (
        "runtime=torch,onnx batch=1,8 (2026-12-01/20-43-13)")
    assert sweep_label(["experiment=pin_memory_ab", "data.root=x"]) == "experiment=pin_memory_ab"
    assert sweep_label(["batch=range(1,4)"]) == "batch=range(1,4)"
    assert sweep_label(["resolution=32"]) == "sweep"
    assert len(sweep_label([f"k{i}=1,2" for i in range(40)])) <= 80


def test_a_captured_cuda_graph_is_in_the_name_as_compile_modes_are():
    graph = _params(**{"runtime.cuda_graph": True})
    assert job_name(graph) == "torch-graph-resnet18-32-b1-fp32"
    assert job_name(graph, ["runtime.cuda_graph"]) == "torch-graph-resnet18-32-b1-fp32"
    assert job_name(_params(**{"runtime.cuda_graph": False}), ["runtime.cuda_graph"]) == (
        "torch-resnet18-32-b1-fp32")
    compiled = _params(runtime="compile", **{"runtime.mode": "reduce-overhead"})
    assert job_name(compiled) == "compile-reduce-overhead-resnet18-32-b1-fp32"


def test_a_run_name_puts_what_its_sweep_varies_first():
    b8 = _params(runtime="openvino", batch=8, resolution=224)
    assert job_name(b8, ["batch"]) == "openvino-resnet18-224-b8-fp32"  # its folder, unchanged
    assert run_name(b8, ["batch"]) == "b8 · openvino-resnet18-224-fp32"
    # the part the runs table shows (about 18 characters) tells b1 from b8
    b1 = run_name({**b8, "batch": 1}, ["batch"])
    assert b1[:18] != run_name(b8, ["batch"])[:18]
    assert run_name(b8, ["runtime", "+batch", "resolution"]) == "openvino 224 b8 · resnet18-fp32"
    assert run_name(b8) == job_name(b8)  # nothing swept: the folder's name
    assert run_name(b8, ["experiment"]) == job_name(b8)  # a swept key that is no param
    assert run_name(b8, ["device"]) == "device_auto · openvino-resnet18-224-b8-fp32"
    checked = _params(**{"check.enabled": False})
    assert run_name(checked, ["check.enabled"]) == (
        "check.enabled_False · torch-resnet18-32-b1-fp32")
    compiled = _params(runtime="compile", **{"runtime.mode": "max-autotune"})
    assert run_name(compiled, ["runtime.mode"]) == "compile-max-autotune · resnet18-32-b1-fp32"


def test_a_timm_model_and_a_torchvision_model_of_one_name_are_told_apart():
    timm = flatten(SweepConfig(runtime=TorchRuntimeConfig(), resolution=32,
                               model=ModelConfig(kind="timm", name="resnet18")))
    torchvision = _params()
    assert (timm["model"], torchvision["model"]) == ("resnet18", "resnet18")
    assert job_name(timm) == "torch-timm-resnet18-32-b1-fp32"
    assert job_name(torchvision) == "torch-resnet18-32-b1-fp32"
    # model=timm,resnet18: the sweep varies the model group, its runs start with the model
    assert run_name(timm, ["model"]) == "timm-resnet18 · torch-32-b1-fp32"
    assert run_name(torchvision, ["model"]) == "resnet18 · torch-32-b1-fp32"
    assert run_name(timm, ["model.name"]) == "timm-resnet18 · torch-32-b1-fp32"


def test_a_non_square_resolution_is_named_height_x_width():
    from sweep.result import job_name

    params = {"runtime": "onnx", "model": "ssdlite", "batch": 1, "precision": "fp32"}
    assert job_name({**params, "resolution": [96, 160]}) == "onnx-ssdlite-96x160-b1-fp32"
    assert job_name({**params, "resolution": 224}) == "onnx-ssdlite-224-b1-fp32"
