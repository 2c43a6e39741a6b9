"""Detectors, segmenters and any model through the tool (issue 33): the config keys, a YOLO-layout
ONNX file end to end from JPEGs with letterbox and NMS timed, the check catching a broken
adapter, and torchvision detectors and segmenters through a real multirun."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import only_sweep_dir, run_cli

from sweep import config as c
from sweep.demo_data import generate
from sweep.errors import ConfigError
from sweep.job import resolve_task, run_job
from sweep.model_files import open_onnx


class TinyYolo(torch.nn.Module):
    """A YOLO-layout head: (batch, 4 + 3, anchors), centre/size boxes in input pixels, sigmoid
    class scores (as YOLOv8/11 exports write them)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 7, 3, stride=8, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).flatten(2)
        h, w = x.shape[-2:]
        xy = y[:, :2].sigmoid() * torch.tensor([w, h], dtype=x.dtype)[None, :, None]
        wh = 4 + y[:, 2:4].sigmoid() * 32
        return torch.cat([xy, wh, y[:, 4:].sigmoid()], 1)


class TinySeg(torch.nn.Module):
    """(batch, 5 classes, H, W) logits that depend on the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * 4


def export(model: torch.nn.Module, path: Path, size=(96, 160), dynamic_hw: bool = False) -> Path:
    torch.manual_seed(0)
    model = model.eval()
    axes = {0: "batch", 2: "h", 3: "w"} if dynamic_hw else {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(model, (torch.rand(2, 3, *size),), str(path), input_names=["images"],
                          output_names=["output0"], opset_version=17, dynamo=False,
                          dynamic_axes={"images": axes, "output0": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def yolo_file(tmp_path_factory) -> Path:
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    return export(TinyYolo(), tmp_path_factory.mktemp("yolo") / "yolo.onnx")


def _cfg(tmp_path: Path, runtime: str = "onnx", **values) -> c.SweepConfig:
    model = values.pop("model")
    return c.SweepConfig(runtime=c.RuntimeConfig.choices[runtime](), model=model, batch=2,
                         device="cpu", cache_dir=str(tmp_path / "cache"),
                         bench=c.BenchConfig(warmup=1, min_iters=2, min_seconds=0.01,
                                             telemetry=False),
                         check=c.CheckConfig(samples=4), **values)


# --- the config: clear errors --------------------------------------------------------------


@pytest.mark.parametrize(("make", "words"), [
    (lambda: c.ModelConfig(task="track"), ["model.task='track'", "classify, detect"]),
    (lambda: c.ModelConfig(kind="onnx", path="m.onnx", output_format="ssd"),
     ["model.output_format='ssd'", "yolo, torchvision"]),
    (lambda: c.ModelConfig(kind="onnx", path="m.onnx", task="segment", output_format="yolo"),
     ["model.output_format='yolo'", "model.task=segment", "Drop model.output_format"]),
    (lambda: _typed(resolution=[96]), ["resolution=[96]", "[height, width]",
                                        "resolution=[384,640]"]),
    (lambda: _typed(resolution=[96, 4]), ["resolution=[96, 4]", "8..8192"]),
    (lambda: _typed(resolution=[96, math.nan]), ["resolution=[96, nan]", "whole number"]),
    (lambda: c.PostprocessConfig(conf=1.5), ["postprocess.conf=1.5", "<= 1"]),
    (lambda: c.PostprocessConfig(iou=math.nan), ["postprocess.iou=nan"]),
])
def test_task_keys_are_checked_with_clear_errors(make, words):
    with pytest.raises(ConfigError) as e:
        make()
    for w in words:
        assert w in str(e.value), str(e.value)


def _typed(**values) -> c.SweepConfig:
    return c.SweepConfig(runtime=c.TorchRuntimeConfig(), **values)


def test_resize_and_non_square_resolution_are_typed():
    cfg = c.SweepConfig(runtime=c.TorchRuntimeConfig(), resolution=[96, 160],
                        pipeline=c.SerialPipelineConfig(resize="letterbox"))
    assert cfg.resolution == [96, 160] and c.size_of(cfg.resolution) == (96, 160)
    assert c.size_of(224) == (224, 224)
    with pytest.raises(ConfigError, match=r"pipeline.resize='pad'.*letterbox, stretch"):
        c.SerialPipelineConfig(resize="pad")


def test_a_file_task_is_inferred_or_refused_naming_its_output_shape(yolo_file, tmp_path):
    seg = export(TinySeg(), tmp_path / "seg.onnx")
    cfg = _cfg(tmp_path, model=c.ModelConfig(kind="onnx", path=str(seg)))
    assert resolve_task(cfg, open_onnx(cfg.model)) == (
        "segment", "first output (batch, classes, H, W) (?, 5, 96, 160)")
    plain = _cfg(tmp_path, model=c.ModelConfig(kind="onnx", path=str(yolo_file)))
    task, how = resolve_task(plain, open_onnx(plain.model))
    assert task == "raw" and "set model.output_format=yolo" in how
    wrong = _cfg(tmp_path, model=c.ModelConfig(kind="onnx", path=str(yolo_file),
                                               output_format="torchvision"))
    with pytest.raises(ConfigError, match=r"boxes \(N, 4\).*the model has \(\?, 7, 240\)"):
        resolve_task(wrong, open_onnx(wrong.model))
    as_seg = _cfg(tmp_path, model=c.ModelConfig(kind="onnx", path=str(yolo_file), task="segment"))
    with pytest.raises(ConfigError, match=r"\(\?, 7, 240\).*\(batch, classes, H, W\)"):
        resolve_task(as_seg, open_onnx(as_seg.model))
    tv = _cfg(tmp_path, model=c.ModelConfig(name="resnet18", task="detect"))
    with pytest.raises(ConfigError, match="resnet18 is a classify model.*model.task=classify"):
        resolve_task(tv)


def test_torch_compile_on_a_torchvision_detector_fails_with_the_reason(tmp_path):
    cfg = _cfg(tmp_path, "compile", model=c.ModelConfig(name="ssdlite320_mobilenet_v3_large"),
               resolution=[96, 160])
    r = run_job(cfg, tmp_path / "job")
    assert r.status == "failed" and "Python control flow" in r.error
    assert "runtime=torch, onnx or openvino" in r.error


# --- a YOLO-layout file end to end ----------------------------------------------------------


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_a_yolo_file_runs_end_to_end_from_jpegs_with_letterbox_and_nms_timed(
        yolo_file, tmp_path, runtime):
    if runtime == "openvino":
        pytest.importorskip("openvino")
    generate(tmp_path / "jpegs", classes=2, per_class=3, min_size=60, max_size=200)
    cfg = _cfg(tmp_path, runtime,
               model=c.ModelConfig(kind="onnx", path=str(yolo_file), output_format="yolo"),
               data=c.DataConfig(name="imagefolder", root=str(tmp_path / "jpegs")),
               pipeline=c.FastPipelineConfig(workers=2), resolution=None)
    r = run_job(cfg, tmp_path / "job")
    assert r.status == "ok", r.error
    assert r.params["resolution"] == [96, 160] and "static input" in r.info["resolution_from"]
    assert r.info["task_from"].startswith("model.output_format=yolo: outputs (?, 7, 240)")
    m = r.metrics
    assert m["correct"] == 1.0 and m["boxes_compared"] > 50 and m["box_agreement_pct"] == 100.0
    assert m["gflop_per_img"] > 0 and m["e2e_fps"] > 0 and m["postprocess_ms"] > 0
    assert {"decode_ms", "preprocess_ms", "infer_ms"} <= set(m)
    assert "letterbox to 96x160" in r.info["preprocessing"]
    assert "NMS" in r.info["postprocess"]
    from sweep.metrics import unknown, unknown_info

    assert unknown(m) == [] and unknown_info(r.info) == []


def test_serving_a_detector_ends_a_request_with_its_boxes_on_the_host(yolo_file, tmp_path):
    cfg = _cfg(tmp_path, model=c.ModelConfig(kind="onnx", path=str(yolo_file),
                                             output_format="yolo"),
               resolution=[96, 160],
               scenario=c.SingleStreamScenarioConfig(duration_s=0.1, min_requests=10))
    r = run_job(cfg, tmp_path / "job")
    assert r.status == "ok", r.error
    assert r.metrics["latency_ms_p50"] > 0 and "inside each request's latency" in \
        r.info["postprocess"]


def test_data_coco_and_masks_give_map_and_miou_through_the_job(yolo_file, tmp_path):
    from sweep.tasks.demo_labels import make_coco, make_masks

    coco = make_coco(tmp_path / "coco", n=4)
    cfg = _cfg(tmp_path, model=c.ModelConfig(kind="onnx", path=str(yolo_file),
                                             output_format="yolo"),
               data=c.DataConfig(name="coco", root=str(coco)), resolution=[96, 160],
               postprocess=c.PostprocessConfig(conf=0.01))
    r = run_job(cfg, tmp_path / "det")
    assert r.status == "ok", r.error
    assert 0 <= r.metrics["map_50"] <= 1 and 0 <= r.metrics["map_50_95"] <= r.metrics["map_50"]
    assert r.metrics["data_images"] == 4 and "pycocotools" in r.info["accuracy_basis"]
    masks = make_masks(tmp_path / "masks", n=3, size=(60, 80))
    seg = export(TinySeg(), tmp_path / "seg.onnx", size=(96, 96))
    cfg = _cfg(tmp_path, model=c.ModelConfig(kind="onnx", path=str(seg)),
               data=c.DataConfig(name="masks", root=str(masks)), resolution=None)
    r = run_job(cfg, tmp_path / "seg")
    assert r.status == "ok", r.error
    assert 0 <= r.metrics["miou"] <= 1 and r.metrics["data_images"] == 3
    assert "resized back to each image" in r.info["accuracy_basis"]


# --- a broken adapter is caught ---------------------------------------------------------------


def test_a_broken_adapter_is_caught_as_outputs_wrong(yolo_file, tmp_path, monkeypatch):
    from torchvision.ops import box_convert

    from sweep.runtimes.ort import OnnxRuntime

    infer = OnnxRuntime.infer

    def corners_as_centres(self, x):  # boxes in the wrong order: the head's rows read as xyxy
        out = infer(self, x)
        boxes = box_convert(out[:, :4].transpose(1, 2), "cxcywh", "xyxy").transpose(1, 2)
        return torch.cat([boxes, out[:, 4:]], 1)

    monkeypatch.setattr(OnnxRuntime, "infer", corners_as_centres)
    cfg = _cfg(tmp_path, model=c.ModelConfig(kind="onnx", path=str(yolo_file),
                                             output_format="yolo"), resolution=[96, 160])
    r = run_job(cfg, tmp_path / "det")
    assert r.status == "ok" and r.metrics["correct"] == 0.0
    assert "box_agreement_pct" in r.info["correctness"] and r.metrics["boxes_compared"] > 50

    seg = export(TinySeg(), tmp_path / "seg.onnx", size=(96, 96))
    monkeypatch.setattr(OnnxRuntime, "infer", lambda self, x: infer(self, x).transpose(2, 3))
    cfg = _cfg(tmp_path, model=c.ModelConfig(kind="onnx", path=str(seg)), resolution=None)
    r = run_job(cfg, tmp_path / "seg")
    assert r.status == "ok" and r.metrics["correct"] == 0.0, r.info
    assert "mask_agreement_pct" in r.info["correctness"]
    monkeypatch.setattr(OnnxRuntime, "infer", infer)
    r = run_job(cfg, tmp_path / "seg-ok")
    assert r.metrics["correct"] == 1.0 and r.metrics["mask_agreement_pct"] == 100.0


# --- torchvision detectors and segmenters through a real multirun -------------------------


@pytest.mark.slow
def test_torchvision_detector_and_segmenter_through_a_multirun(tmp_path):
    proc = run_cli(["-m", "model.name=ssdlite320_mobilenet_v3_large,lraspp_mobilenet_v3_large",
                    "runtime=torch,onnx,openvino", "resolution=[96,160]", "batch=1",
                    "model.num_classes=3",  # few classes: the detector's per-class NMS is quick
                    "device=cpu", "bench.warmup=1", "bench.min_iters=2",
                    "bench.min_seconds=0.01", "bench.telemetry=false", "check.samples=2",
                    "tracking.enabled=false"], tmp_path, tmp_path / "cache", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text())
               for p in sorted(only_sweep_dir(tmp_path).glob("*/result.json"))]
    assert len(results) == 6
    for r in results:
        m = r["metrics"]
        assert r["status"] == "ok" and m["correct"] == 1.0, (r["job"], r["info"])
        assert m["gflop_per_img"] > 0 and r["info"]["flops_counted"]
        if "ssdlite" in r["job"]:
            assert m["boxes_compared"] > 0 and m["box_agreement_pct"] >= 98
        else:
            assert m["pixels_compared"] == 2 * 96 * 160 and m["mask_agreement_pct"] >= 99.5


def test_report_shows_task_checks_and_recommends_among_jobs_whose_boxes_agree(tmp_path):
    from test_recommend import save_job

    from sweep import analysis as an
    from sweep.report import write_reports
    from sweep.sources import load_dir

    base = {"model": "ssdlite320_mobilenet_v3_large", "batch": 1}
    check = {"boxes_compared": 40.0, "box_iou_mean": 1.0}
    save_job(tmp_path, 0, {**base, "runtime": "torch"},
             {"fps": 10.0, "infer_ms_per_img": 100.0, "infer_ms_p50": 100.0,
              "box_agreement_pct": 100.0, **check})
    save_job(tmp_path, 1, {**base, "runtime": "onnx"},
             {"fps": 30.0, "infer_ms_per_img": 33.0, "infer_ms_p50": 33.0,
              "box_agreement_pct": 99.0, **check})
    save_job(tmp_path, 2, {**base, "runtime": "openvino"},
             {"fps": 90.0, "infer_ms_per_img": 11.0, "infer_ms_p50": 11.0,
              "box_agreement_pct": 10.0, **check, "correct": 0.0},
             {"correctness": "box_agreement_pct 10 (needs >= 98 for fp32)"})
    text = an.recommendation(load_dir(tmp_path))
    assert "onnx" in text and "among jobs whose boxes agree" in text, text
    write_reports(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "box agreement %" in report and "box_agreement_pct 10" in report
