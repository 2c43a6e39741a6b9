"""Segmenters: (batch, classes, H, W) logits; the mask is the argmax over classes, resized to
the original image where its geometry is given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F

from sweep.tasks.base import Shape, Task, shape_text
from sweep.tasks.geometry import Geometry, valid_region


def logits_of(outputs: Any) -> torch.Tensor:
    """torchvision's segmenters return {"out": ..., "aux": ...}; files a list of outputs."""
    if isinstance(outputs, dict):
        return outputs["out"]
    return outputs[0] if isinstance(outputs, list | tuple) else outputs


class Segment(Task):
    name = "segment"

    @classmethod
    def cannot_read(cls, shapes: Sequence[Shape], output_format: str | None) -> str | None:
        if output_format is not None:
            return f"output_format={output_format!r} is not a segmenter's (use null)"
        if not shapes or len(shapes[0]) != 4:
            got = ", ".join(shape_text(s) for s in shapes) or "none"
            return f"its output(s) {got}; a segmenter's first output is (batch, classes, H, W)"
        return None

    def postprocess(self, outputs: Any, meta: Sequence[Geometry] | None = None) -> list:
        """One mask (H, W) per image, uint8 where the classes fit in it."""
        logits = logits_of(outputs)
        dtype = torch.uint8 if logits.shape[1] <= 256 else torch.int64
        if meta is None:
            return list(logits.argmax(1).to(dtype))
        masks = []
        for lg, geo in zip(logits, meta, strict=True):
            top, left, bottom, right = valid_region(geo)
            # the logits cover the model input; the image is the unpadded part of it
            lg = lg[:, top * lg.shape[1] // geo.target[0]: bottom * lg.shape[1] // geo.target[0],
                    left * lg.shape[2] // geo.target[1]: right * lg.shape[2] // geo.target[1]]
            size = geo.source if min(geo.pad) >= 0 else (  # a crop: the crop's source pixels
                round((bottom - top) / geo.scale[0]), round((right - left) / geo.scale[1]))
            lg = F.interpolate(lg[None].float(), size=size, mode="bilinear",
                               align_corners=False)[0]
            masks.append(lg.argmax(0).to(dtype))
        return masks

    def compare(self, pred: list, ref: list) -> dict[str, float]:
        """Share of reference pixels whose class the prediction agrees on; a mask of another
        shape agrees nowhere."""
        agree, total = 0, 0
        for p, r in zip(pred, ref, strict=True):
            total += r.numel()
            if p.shape == r.shape:
                agree += int((p.cpu() == r.cpu()).sum())
        return {"mask_agreement_pct": 100.0 * agree / total if total else float("nan"),
                "pixels_compared": float(total)}
