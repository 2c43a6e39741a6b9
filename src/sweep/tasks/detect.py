"""Detectors: torchvision's list of {boxes, labels, scores} (or its ONNX export's boxes, labels,
scores outputs per image), or a YOLO-layout tensor (batch, 4 + classes, anchors) with boxes as
centre/size (YOLOv8/11 exports), decoded and suppressed with `torchvision.ops.batched_nms` on the
device the outputs are on.

The check matches each reference box to at most one predicted box of the same class by IoU
(Hungarian assignment, `scipy.optimize.linear_sum_assignment`): `box_agreement_pct` is the share
of reference boxes found with IoU >= MATCH_IOU, `box_iou_mean` the mean IoU of each reference
box's match (0 when none), `box_extra_pct` the share of predicted boxes that match none.

Random weights still give a decisive check: a check runs post-processing at CHECK_CONF, a score
threshold low enough that the reference has boxes (random YOLO heads score about 0.5 after their
sigmoid; torchvision's detectors are built with `box_score_thresh` lowered, see
`sweep.models.build_task_model`), and `boxes_compared` says how many reference boxes were
judged. With none the check is not decisive and says so (`tolerance.judge`); a runtime that
finds boxes where the reference has none fails through `box_extra_pct`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torchvision.ops import batched_nms, box_convert, box_iou

from sweep.tasks.base import Shape, Task, known, shape_text
from sweep.tasks.geometry import Geometry, boxes_to_original

MATCH_IOU = 0.9
CHECK_CONF = 0.01  # the check's score threshold (see the module docstring)
OUTPUT_FORMATS = ("torchvision", "yolo")


def decode_yolo(out: torch.Tensor, conf: float, iou: float, max_det: int) -> list[dict]:
    """(batch, 4 + classes, anchors), boxes cx, cy, w, h in input pixels, class scores already
    activated: per image the boxes (xyxy) whose best class scores >= `conf`, after per-class
    NMS at `iou`, at most `max_det`, highest score first."""
    preds = []
    for x in out:  # (4 + classes, anchors)
        # the candidates first, by the best score alone (a max without its index is ~10x
        # cheaper), then the classes of those few: YOLO heads leave nearly all anchors below conf
        keep = torch.nonzero(x[4:].amax(0) >= conf).flatten()
        candidates = x[:, keep]
        scores, labels = candidates[4:].max(0)
        boxes = box_convert(candidates[:4].T, "cxcywh", "xyxy")
        kept = batched_nms(boxes.float(), scores.float(), labels, iou)[:max_det]
        preds.append({"boxes": boxes[kept].float(), "labels": labels[kept],
                      "scores": scores[kept].float()})
    return preds


def _torchvision_images(outputs: Any) -> list[dict]:
    """The model's own list of dicts, or an ONNX export's flat outputs (boxes, labels, scores
    per image)."""
    if isinstance(outputs, dict):
        return [outputs]
    if outputs and isinstance(outputs[0], dict):
        return list(outputs)
    if len(outputs) % 3:
        shapes = ", ".join(shape_text(tuple(o.shape)) for o in outputs)
        raise ValueError(f"output_format=torchvision expects boxes (N, 4), labels (N,), scores "
                         f"(N,) per image; the model returned {len(outputs)} outputs: {shapes}")
    return [_triple(outputs[i:i + 3]) for i in range(0, len(outputs), 3)]


def _triple(outs: Sequence[torch.Tensor]) -> dict:
    """One image's boxes, labels and scores, in whichever order the model wrote them (R-CNNs:
    boxes, labels, scores; SSD, RetinaNet, FCOS: boxes, scores, labels): labels are the
    integer one."""
    boxes, a, b = outs
    labels, scores = (a, b) if not a.is_floating_point() else (b, a)
    return {"boxes": boxes, "labels": labels, "scores": scores}


class Detect(Task):
    name = "detect"
    output_formats = OUTPUT_FORMATS

    def __init__(self, output_format: str = "torchvision", conf: float = 0.25, iou: float = 0.7,
                 max_det: int = 300) -> None:
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"model.output_format={output_format!r} is not a detector's; use "
                             f"one of {', '.join(OUTPUT_FORMATS)}")
        self.output_format, self.conf, self.iou, self.max_det = output_format, conf, iou, max_det

    @classmethod
    def cannot_read(cls, shapes: Sequence[Shape], output_format: str | None) -> str | None:
        got = ", ".join(shape_text(s) for s in shapes) or "none"
        if output_format == "yolo":
            if len(shapes) != 1 or len(shapes[0]) != 3:
                return (f"output_format=yolo expects one output (batch, 4 + classes, anchors); "
                        f"the model has {got}")
            fields, anchors = known(shapes[0][1]), known(shapes[0][2])
            if fields is not None and fields < 5:
                return (f"output_format=yolo expects (batch, 4 + classes, anchors) with at least "
                        f"5 rows; the output is {got}")
            if fields is not None and anchors is not None and fields > anchors:
                return (f"output_format=yolo expects (batch, 4 + classes, anchors); the output "
                        f"{got} looks transposed (batch, anchors, 4 + classes): export it "
                        "without the transpose")
            return None
        if output_format == "torchvision":
            ranks = [len(s) for s in shapes]
            ok = ranks and len(ranks) % 3 == 0 and all(
                ranks[i:i + 3] == [2, 1, 1] and known(shapes[i][1]) in (4, None)
                for i in range(0, len(ranks), 3))
            return None if ok else (f"output_format=torchvision expects boxes (N, 4), labels "
                                    f"(N,), scores (N,) per image; the model has {got}")
        return (f"task=detect needs model.output_format ({' or '.join(OUTPUT_FORMATS)}) for "
                f"outputs {got}")

    def postprocess(self, outputs: Any, meta: Sequence[Geometry] | None = None) -> list[dict]:
        """Per image {boxes (K, 4) xyxy, labels (K,), scores (K,)}, highest score first, in the
        original image's pixels where `meta` gives each image's resize."""
        if self.output_format == "yolo":
            out = outputs[0] if isinstance(outputs, list | tuple) else outputs
            preds = decode_yolo(out, self.conf, self.iou, self.max_det)
        else:
            preds = []
            for p in _torchvision_images(outputs):
                keep = torch.nonzero(p["scores"] >= self.conf).flatten()
                keep = keep[p["scores"][keep].argsort(descending=True)][: self.max_det]
                preds.append({"boxes": p["boxes"][keep].float(), "labels": p["labels"][keep],
                              "scores": p["scores"][keep].float()})
        if meta is not None:
            for p, geo in zip(preds, meta, strict=True):
                p["boxes"] = boxes_to_original(p["boxes"], geo)
        return preds

    def compare(self, pred: list[dict], ref: list[dict]) -> dict[str, float]:
        n_ref = n_pred = found = 0
        iou_sum = 0.0
        for p, r in zip(pred, ref, strict=True):
            n_ref, n_pred = n_ref + len(r["boxes"]), n_pred + len(p["boxes"])
            ious = match(p, r)
            found += int((ious >= MATCH_IOU).sum())
            iou_sum += float(ious.sum())
        nan = math.nan
        return {"box_agreement_pct": 100.0 * found / n_ref if n_ref else nan,
                "box_iou_mean": iou_sum / n_ref if n_ref else nan,
                "box_extra_pct": 100.0 * (n_pred - found) / n_pred if n_pred else 0.0,
                "boxes_compared": float(n_ref), "boxes_predicted": float(n_pred)}


def match(pred: dict, ref: dict) -> torch.Tensor:
    """The IoU of each matched pair (reference boxes matched one to one to predicted boxes of
    the same class, maximising the total IoU); unmatched reference boxes are left out."""
    from scipy.optimize import linear_sum_assignment

    rb, pb = ref["boxes"].double().cpu(), pred["boxes"].double().cpu()
    if not len(rb) or not len(pb):
        return torch.zeros(0, dtype=torch.float64)
    iou = box_iou(rb, pb)
    iou[ref["labels"].cpu()[:, None] != pred["labels"].cpu()[None, :]] = 0.0
    iou = torch.nan_to_num(iou, nan=0.0)
    rows, cols = linear_sum_assignment(iou.numpy(), maximize=True)
    pairs = iou[torch.as_tensor(rows), torch.as_tensor(cols)]
    return pairs[pairs > 0]
