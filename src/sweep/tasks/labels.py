"""Accuracy on labels, for trained weights: COCO mAP (pycocotools, the reference evaluator) on
a folder with a COCO-format annotations JSON, and mean IoU on a folder of PNG masks.

Folders: `coco`: images plus `annotations.json` (COCO instances: images, annotations with bbox
[x, y, w, h], categories); `masks`: `images/NAME.jpg|png` with `masks/NAME.png` (one class index
per pixel, IGNORE for pixels not judged).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

IGNORE = 255  # a mask pixel that is not judged (VOC's border)
ANNOTATIONS = "annotations.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_coco(root: str | Path) -> dict:
    """The annotations of a `coco` folder; each image's `file_name` is relative to `root`."""
    path = Path(root) / ANNOTATIONS
    if not path.is_file():
        raise ValueError(f"data=coco needs {path}: a COCO-format annotations JSON beside the "
                         "images (e.g. made by `sweep.tasks.demo_labels.make_coco`)")
    return json.loads(path.read_text())


def coco_map(annotations: dict, predictions: dict[int, dict]) -> dict[str, float]:
    """`map_50_95` and `map_50` of `predictions` (image id -> {boxes (K, 4) xyxy in the image's
    pixels, labels (K,) category ids, scores (K,)}) against COCO `annotations`, by pycocotools'
    COCOeval (101-point interpolated precision, areas 'all', maxDets 100)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dets = []
    for image_id, p in predictions.items():
        boxes = np.asarray(p["boxes"], dtype=np.float64).reshape(-1, 4)
        for (x0, y0, x1, y1), label, score in zip(boxes, np.asarray(p["labels"]).tolist(),
                                                  np.asarray(p["scores"]).tolist(), strict=True):
            dets.append({"image_id": int(image_id), "category_id": int(label),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
    if not dets:  # pycocotools cannot load an empty result
        return {"map_50_95": 0.0, "map_50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"info": {}, **annotations}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map_50_95": max(float(ev.stats[0]), 0.0), "map_50": max(float(ev.stats[1]), 0.0)}


def mask_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths of a `masks` folder, by name."""
    root = Path(root)
    images = sorted(p for p in (root / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    pairs = [(p, root / "masks" / f"{p.stem}.png") for p in images]
    missing = [str(m) for _, m in pairs if not m.is_file()]
    if not pairs or missing:
        raise ValueError(f"data=masks needs images/NAME.jpg|png with masks/NAME.png under {root}"
                         f"; {'missing ' + missing[0] if missing else 'no images found'}")
    return pairs


def read_mask(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts of gt class (rows) vs predicted class (columns),
    IGNORE pixels left out."""
    pred, gt = np.asarray(pred).astype(np.int64), np.asarray(gt).astype(np.int64)
    if pred.shape != gt.shape:
        raise ValueError(f"a predicted mask of shape {pred.shape} cannot be judged against a "
                         f"label mask of shape {gt.shape}")
    keep = (gt != IGNORE) & (gt < num_classes)
    idx = gt[keep] * num_classes + np.clip(pred[keep], 0, num_classes - 1)
    return np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def miou(pairs, num_classes: int) -> dict[str, float]:
    """Mean IoU over the classes present in the labels or the predictions, from (pred, gt)
    masks; `miou` on a 0..1 scale, with `pixel_acc`."""
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    for pred, gt in pairs:
        total += confusion(pred, gt, num_classes)
    tp = np.diag(total).astype(np.float64)
    union = total.sum(0) + total.sum(1) - tp
    present = union > 0
    return {"miou": float((tp[present] / union[present]).mean()) if present.any() else 0.0,
            "pixel_acc": float(tp.sum() / total.sum()) if total.sum() else 0.0}
