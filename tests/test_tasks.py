"""Tasks (issue 33): post-processing, the correctness check and accuracy on labels, on the CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms, box_convert

from sweep.tasks import get_task, infer_task
from sweep.tasks.demo_labels import make_coco, make_masks
from sweep.tasks.detect import decode_yolo
from sweep.tasks.geometry import boxes_to_input, boxes_to_original, resize
from sweep.tasks.labels import coco_map, mask_pairs, miou, read_coco, read_mask


def _coco(boxes):
    """Annotations with one image per box (x0, y0, x1, y1), category 1."""
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "height": 100, "width": 100}
              for i in range(len(boxes))]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)}
            for i, (x0, y0, x1, y1) in enumerate(boxes)]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}


def test_map_perfect_is_one_and_shifted_boxes_drop_as_computed_by_hand():
    gt = [(10, 10, 20, 20), (40, 40, 50, 50)]
    ann = _coco(gt)
    perfect = {i + 1: {"boxes": [b], "labels": [1], "scores": [0.9]} for i, b in enumerate(gt)}
    assert coco_map(ann, perfect) == {"map_50_95": 1.0, "map_50": 1.0}
    # the second box shifted 2 px right: IoU = 80 / 120 = 0.667, a hit at the 4 thresholds
    # 0.50..0.65 and a miss at the 6 from 0.70; it scores lower, so at a strict threshold the
    # first box alone gives precision 1 up to recall 0.5: 51 of COCO's 101 recall points
    shifted = {1: perfect[1], 2: {"boxes": [(42, 40, 52, 50)], "labels": [1], "scores": [0.5]}}
    got = coco_map(ann, shifted)
    assert got["map_50"] == pytest.approx(1.0)
    assert got["map_50_95"] == pytest.approx((4 * 1.0 + 6 * 51 / 101) / 10, abs=1e-6)


def test_miou_known_answer():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 255]])
    pred = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 0, 1]])
    # class 0: tp 3, fp 1 (a 2 read as 0), fn 1 (a 0 read as 1): 3/5; class 1: tp 4, fp 1,
    # fn 0: 4/5; class 2: tp 2, fp 0, fn 1: 2/3; the 255 pixel is not judged
    got = miou([(pred, gt)], num_classes=3)
    assert got["miou"] == pytest.approx((3 / 5 + 4 / 5 + 2 / 3) / 3)
    assert got["pixel_acc"] == pytest.approx(9 / 11)


def test_demo_sets_are_deterministic_and_score_perfect_labels(tmp_path):
    a = read_coco(make_coco(tmp_path / "c1", n=4, seed=3))
    assert a == read_coco(make_coco(tmp_path / "c2", n=4, seed=3))
    assert (tmp_path / "c1" / a["images"][0]["file_name"]).is_file()
    assert sum(p.stat().st_size for p in (tmp_path / "c1").rglob("*") if p.is_file()) < 60_000
    preds = {}
    for im in a["images"]:
        anns = [x for x in a["annotations"] if x["image_id"] == im["id"]]
        preds[im["id"]] = {"boxes": [[x0, y0, x0 + w, y0 + h] for x0, y0, w, h in
                                     (x["bbox"] for x in anns)],
                           "labels": [x["category_id"] for x in anns], "scores": [0.9] * len(anns)}
    assert coco_map(a, preds) == {"map_50_95": 1.0, "map_50": 1.0}
    pairs = mask_pairs(make_masks(tmp_path / "m", n=3, seed=1))
    masks = [read_mask(m) for _, m in pairs]
    assert len(pairs) == 3 and masks[0].shape == (96, 160) and masks[0].max() > 0
    assert miou([(m, m) for m in masks], 4)["miou"] == 1.0
    assert miou([(np.zeros_like(m), m) for m in masks], 4)["miou"] < 1.0


def test_yolo_decode_and_nms_on_a_hand_made_tensor():
    # 4 anchors, 2 classes: anchors 0 and 1 overlap (same class, IoU 0.68): NMS keeps the higher;
    # anchor 2 is class 1; anchor 3 is below conf
    cx = [[50, 52, 50, 10], [50, 50, 50, 10], [20, 20, 20, 4], [20, 20, 20, 4]]
    scores = [[0.9, 0.8, 0.1, 0.1], [0.1, 0.1, 0.7, 0.05]]
    out = torch.tensor([cx[0], cx[1], cx[2], cx[3], *scores])[None]  # (1, 6, 4)
    (p,) = decode_yolo(out, conf=0.25, iou=0.5, max_det=10)
    assert p["labels"].tolist() == [0, 1]
    assert p["scores"].tolist() == pytest.approx([0.9, 0.7])
    assert p["boxes"][0].tolist() == [40, 40, 60, 60]
    (p,) = decode_yolo(out, conf=0.25, iou=0.5, max_det=1)
    assert len(p["boxes"]) == 1


def test_yolo_decode_keeps_what_a_plain_per_anchor_reading_keeps():
    """The candidates are found by the best score alone, before the classes are read: the same
    boxes, classes and scores as reading every anchor's classes first."""
    torch.manual_seed(0)
    out = torch.rand(2, 4 + 5, 300)
    out[:, :4] *= 100
    out[:, 4:] = out[:, 4:] ** 6  # a few anchors above conf
    for image, (p,) in zip(out, (decode_yolo(out[i:i + 1], 0.3, 0.5, 50) for i in range(2)),
                           strict=True):
        x = image.T  # (anchors, 4 + classes)
        scores, labels = x[:, 4:].max(1)
        keep = scores >= 0.3
        boxes = box_convert(x[keep, :4], "cxcywh", "xyxy")
        kept = batched_nms(boxes, scores[keep], labels[keep], 0.5)[:50]
        assert 0 < len(kept) == len(p["boxes"])
        assert torch.equal(p["boxes"], boxes[kept]) and torch.equal(p["labels"], labels[keep][kept])
        assert torch.equal(p["scores"], scores[keep][kept])


@pytest.mark.parametrize("mode", ["letterbox", "stretch", "shorter_side_crop"])
def test_a_resize_written_into_a_slot_equals_the_plain_resize(mode):
    """The pipelines resize each HWC image into its slot of the batch (a float32 slot that
    holds levels, or a CHW view of a uint8 HWC slot): the same values as the plain resize."""
    hwc = torch.randint(0, 255, (120, 90, 3), dtype=torch.uint8)
    plain, geo = resize(hwc.permute(2, 0, 1).contiguous(), [96, 160], mode)
    levels = torch.full((3, 96, 160), -1.0)
    resize(hwc.permute(2, 0, 1), [96, 160], mode, out=levels)
    assert torch.equal(levels, plain.float())
    slot = torch.zeros(96, 160, 3, dtype=torch.uint8)
    _, same = resize(hwc.permute(2, 0, 1), [96, 160], mode, out=slot.permute(2, 0, 1))
    assert torch.equal(slot.permute(2, 0, 1), plain) and same == geo


@pytest.mark.parametrize("mode", ["letterbox", "stretch", "shorter_side_crop"])
def test_boxes_round_trip_through_a_non_square_resize(mode):
    image = torch.randint(0, 255, (3, 120, 90), dtype=torch.uint8)
    out, geo = resize(image, [96, 160], mode)
    assert out.shape == (3, 96, 160) and out.dtype == torch.uint8
    boxes = torch.tensor([[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 90.0, 120.0]])
    back = boxes_to_original(boxes_to_input(boxes, geo), geo)
    if mode != "shorter_side_crop":  # a crop cuts the second box; clipping is the inverse
        assert torch.allclose(back, boxes, atol=1e-4)
    else:
        assert torch.allclose(back[0], boxes[0], atol=1e-4)
    if mode == "letterbox":  # 120x90 into 96x160: scale 0.8, 72 px wide, 44 px pad left
        assert geo.scale == (0.8, 0.8) and geo.pad == (0, 44)
        assert (out[:, :, :44] == 114).all() and (out[:, :, 44 + 72:] == 114).all()


def _yolo_boxes(n_anchors=64, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(2, 2, n_anchors, generator=g) * torch.tensor([160.0, 96.0])[None, :, None]
    wh = 8 + torch.rand(2, 2, n_anchors, generator=g) * 30
    return torch.cat([xy, wh, torch.rand(2, classes, n_anchors, generator=g)], 1)


def test_detect_check_passes_itself_and_catches_swapped_box_order():
    task = get_task("detect", output_format="yolo", conf=0.3, iou=0.5)
    out = _yolo_boxes()
    _, geo = resize(torch.zeros(3, 120, 200), [96, 160])
    ref = task.to_host(task.postprocess(out, [geo, geo]))
    same = task.compare(task.postprocess(out + 1e-5, [geo, geo]), ref)
    assert same["boxes_compared"] > 10 and same["box_agreement_pct"] == 100.0
    assert task.is_correct(same, "fp32") == (True, "within tolerance")
    # a broken adapter: the head's centre/size rows read as corners
    swapped = torch.cat([box_convert_rows(out[:, :4]), out[:, 4:]], 1)
    bad = task.compare(task.postprocess(swapped, [geo, geo]), ref)
    ok, reason = task.is_correct(bad, "int8")
    assert not ok and "box_agreement_pct" in reason and bad["box_agreement_pct"] < 60


def box_convert_rows(b):
    from torchvision.ops import box_convert

    return box_convert(b.transpose(1, 2), "cxcywh", "xyxy").transpose(1, 2)


def test_detect_check_without_reference_boxes_says_it_is_not_decisive():
    task = get_task("detect", output_format="yolo", conf=1.01)  # no score reaches it
    out = _yolo_boxes()
    metrics = task.compare(task.postprocess(out), task.postprocess(out))
    ok, reason = task.is_correct(metrics, "fp32")
    assert metrics["boxes_compared"] == 0 and ok and "not decisive" in reason
    extra = task.compare([{"boxes": torch.tensor([[0.0, 0, 5, 5]]), "labels": torch.tensor([0]),
                           "scores": torch.tensor([0.5])}], [task.postprocess(out)[0]])
    assert not task.is_correct(extra, "int8")[0]  # boxes where the reference has none


def test_segment_check_catches_transposed_masks():
    task = get_task("segment")
    g = torch.Generator().manual_seed(0)
    logits = torch.nn.functional.interpolate(torch.randn(2, 5, 6, 6, generator=g), (48, 48))
    ref = task.postprocess(logits)
    assert task.is_correct(task.compare(ref, ref), "fp32")[0]
    bad = task.compare(task.postprocess(logits.transpose(2, 3)), ref)
    assert bad["pixels_compared"] == 2 * 48 * 48 and bad["mask_agreement_pct"] < 50
    assert not task.is_correct(bad, "int8")[0]
    _, geo = resize(torch.zeros(3, 120, 90), [96, 160])  # masks mapped back to 120x90
    masks = task.postprocess(torch.randn(1, 5, 96, 160), [geo])
    assert masks[0].shape == (120, 90)


def test_raw_and_classify_compare_every_output():
    raw = get_task("raw")
    outs = [torch.randn(4, 10), {"a": torch.randn(4, 3, 2)}]
    ref = raw.postprocess(outs)
    assert raw.compare(ref, ref) == {"max_abs_err": 0.0, "rel_err": 0.0,
                                     "cosine_min": pytest.approx(1.0), "outputs_compared": 2.0}
    bad = raw.compare([ref[0], -ref[1]], ref)
    assert bad["cosine_min"] == pytest.approx(-1.0) and not raw.is_correct(bad, "int8")[0]
    nan = raw.compare([ref[0], ref[1] * math.nan], ref)
    assert not raw.is_correct(nan, "int8")[0]
    cls = get_task("classify")
    logits = torch.randn(64, 10)
    m = cls.compare(cls.postprocess(logits), cls.postprocess(logits))
    assert m["agreement_top1_pct"] == 100.0 and cls.is_correct(m, "fp32")[0]
    m = cls.compare(cls.postprocess(logits.roll(1, 1)), cls.postprocess(logits))
    assert not cls.is_correct(m, "int8")[0]


def test_infer_task_from_output_shapes_and_clear_errors():
    assert infer_task([(None, 1000)])[0] == "classify"
    assert infer_task([(None, None, None, None)])[0] == "segment"
    task, how = infer_task([(1, 84, 8400)])
    assert task == "raw" and "model.output_format=yolo" in how
    assert infer_task([(1, 84, 8400)], "yolo") == (
        "detect", "model.output_format=yolo: outputs (1, 84, 8400)")
    assert infer_task([(None, 4), (None,), (None,)], "torchvision")[0] == "detect"
    with pytest.raises(ValueError, match=r"\(1, 8400, 84\) looks transposed"):
        infer_task([(1, 8400, 84)], "yolo")
    with pytest.raises(ValueError, match=r"\(batch, 4 \+ classes, anchors\).*\(\?, 1000\)"):
        infer_task([(None, 1000)], "yolo")
    with pytest.raises(ValueError, match=r"\(1, 1000\).*\(batch, classes, H, W\)"):
        infer_task([(1, 1000)], task="segment")
    with pytest.raises(ValueError, match="output_format='ssd' is not known; use one of"):
        infer_task([(1, 1000)], "ssd")
    with pytest.raises(ValueError, match=r"model.task='track' is not a task; use one of"):
        get_task("track")


class TinyYolo(torch.nn.Module):
    """A YOLO-layout head: (batch, 4 + 3, anchors), centre/size boxes, sigmoid class scores."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 7, 3, stride=8, padding=1)

    def forward(self, x):
        y = self.conv(x).flatten(2)  # (batch, 7, anchors)
        h, w = x.shape[-2:]
        xy = y[:, :2].sigmoid() * torch.tensor([w, h], dtype=x.dtype)[None, :, None]
        wh = 4 + y[:, 2:4].sigmoid() * 32
        return torch.cat([xy, wh, y[:, 4:].sigmoid()], 1)


def test_a_yolo_layout_onnx_file_is_read_as_a_detector(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    model, x = TinyYolo().eval(), torch.rand(2, 3, 96, 160)
    path = tmp_path / "yolo.onnx"
    with torch.no_grad():  # the exporter src/sweep/runtimes/ort.py uses first
        torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["output0"],
                          opset_version=17, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shapes = [o.shape for o in session.get_outputs()]
    task_name, how = infer_task(shapes, "yolo")
    assert task_name == "detect" and how.startswith("model.output_format=yolo: outputs (batch, ")
    task = get_task(task_name, output_format="yolo", conf=0.3, iou=0.5)
    with torch.no_grad():
        ref = task.postprocess(model(x))
    got = task.postprocess(torch.from_numpy(session.run(None, {"images": x.numpy()})[0]))
    metrics = task.compare(got, ref)
    assert metrics["boxes_compared"] > 20 and task.is_correct(metrics, "fp32")[0]


def test_torchvision_detector_with_random_weights_gives_a_decisive_check():
    from sweep.models import build_task_model, make_task_decisive, task_of_torchvision

    name = "fasterrcnn_mobilenet_v3_large_fpn"
    assert task_of_torchvision(name) == "detect"
    assert task_of_torchvision("lraspp_mobilenet_v3_large") == "segment"
    assert task_of_torchvision("resnet18") == "classify" and task_of_torchvision("x") is None
    model = build_task_model(name, resolution=(96, 160), score_thresh=0.01)
    make_task_decisive(model, torch.rand(4, 3, 96, 160, generator=torch.Generator().manual_seed(1)))
    x = torch.rand(2, 3, 96, 160, generator=torch.Generator().manual_seed(2))
    task = get_task("detect", conf=0.01)
    with torch.no_grad():
        ref = task.to_host(task.postprocess(model(list(x))))
        flipped = task.postprocess(model(list(x.flip(1))))  # channels in the wrong order
    same = task.compare(ref, ref)
    assert same["boxes_compared"] >= 20 and same["box_agreement_pct"] == 100.0
    assert len({int(v) for p in ref for v in p["labels"]}) > 3  # labels depend on the input
    assert not task.is_correct(task.compare(flipped, ref), "fp32")[0]


def test_torchvision_segmenter_with_random_weights_gives_a_decisive_check():
    from sweep.models import build_task_model, make_task_decisive

    model = build_task_model("lraspp_mobilenet_v3_large")
    make_task_decisive(model, torch.rand(4, 3, 96, 160, generator=torch.Generator().manual_seed(1)))
    x = torch.rand(2, 3, 96, 160, generator=torch.Generator().manual_seed(2))
    task = get_task("segment")
    with torch.no_grad():
        ref = task.to_host(task.postprocess(model(x)))
        flipped = task.postprocess(model(x.flip(1)))  # channels in the wrong order
    assert task.compare(ref, ref) == {"mask_agreement_pct": 100.0, "pixels_compared": 2 * 96 * 160}
    assert len(ref[0].unique()) > 3  # the mask depends on the input, not one class everywhere
    assert not task.is_correct(task.compare(flipped, ref), "fp32")[0]
