"""Resize an image to the model's [height, width] and map boxes back to the original image.

Three resizes (`pipeline.resize`): `letterbox` keeps the aspect ratio and pads (detectors'
default, as YOLO exports expect), `stretch` scales each axis to fit, `shorter_side_crop` scales
the shorter side to cover and crops the centre (classifiers' habit). Each returns the
`Geometry` that `boxes_to_original` inverts: x_orig = (x - left) / scale_x (a crop is a negative
pad).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as F

RESIZES = ("letterbox", "stretch", "shorter_side_crop")
PAD_VALUE = 114  # grey, as YOLO exports are trained with (uint8 scale; 114/255 for floats)


@dataclass(frozen=True)
class Geometry:
    """How one image of `source` size [h, w] became the model input of `target` size."""

    source: tuple[int, int]
    target: tuple[int, int]
    scale: tuple[float, float]  # (y, x): resized size / source size, per axis
    pad: tuple[int, int]  # (top, left) of the resized image in the target; negative: cropped


def resize(image: torch.Tensor, size: tuple[int, int] | list[int], mode: str = "letterbox",
           out: torch.Tensor | None = None) -> tuple[torch.Tensor, Geometry]:
    """`image` (C, H, W) or (N, C, H, W), uint8 or float, resized to `size` = [height, width]
    by `mode`; the geometry is the same for every image of a batch. With `out` (any strides,
    e.g. a CHW view of an HWC slot; any dtype, e.g. float32 that will hold the levels), the
    result is written there instead of a new tensor: no full-size copy after the resize."""
    if mode not in RESIZES:
        raise ValueError(f"pipeline.resize={mode!r} is not one of {', '.join(RESIZES)}")
    th, tw = int(size[0]), int(size[1])
    geo = geometry_for(tuple(image.shape[-2:]), (th, tw), mode)
    (top, left), (nh, nw) = geo.pad, _resized_size(geo)
    resized = F.resize(image, [nh, nw], antialias=True) if (nh, nw) != geo.source else image
    if mode != "letterbox":  # stretch is the resize itself; a crop is a view of it
        kept = resized if mode == "stretch" else resized[..., -top:-top + th, -left:-left + tw]
        return (kept if out is None else out.copy_(kept)), geo
    if out is None:
        out = torch.empty((*image.shape[:-2], th, tw), dtype=image.dtype, device=image.device)
    # the pad in levels (uint8 scale) unless the image is already scaled to 0..1
    out.fill_(PAD_VALUE / 255 if image.is_floating_point() else PAD_VALUE)
    out[..., top:top + nh, left:left + nw] = resized
    return out, geo


def _resized_size(geo: Geometry) -> tuple[int, int]:
    (sh, sw), (gy, gx) = geo.source, geo.scale
    return max(1, round(sh * gy)), max(1, round(sw * gx))


def geometry_for(source: tuple[int, int], size: tuple[int, int] | list[int],
                 mode: str = "letterbox") -> Geometry:
    """The Geometry `resize` gives an image of `source` [h, w], without resizing anything."""
    th, tw = int(size[0]), int(size[1])
    sh, sw = int(source[0]), int(source[1])
    if mode == "stretch":
        return Geometry((sh, sw), (th, tw), (th / sh, tw / sw), (0, 0))
    gain = min(th / sh, tw / sw) if mode == "letterbox" else max(th / sh, tw / sw)
    nh, nw = max(1, round(sh * gain)), max(1, round(sw * gain))
    return Geometry((sh, sw), (th, tw), (nh / sh, nw / sw), ((th - nh) // 2, (tw - nw) // 2))


def boxes_to_original(boxes: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Boxes (K, 4) xyxy in model-input pixels mapped to the source image, clipped to it."""
    (sy, sx), (top, left) = geometry.scale, geometry.pad
    offset = boxes.new_tensor([left, top, left, top])
    scale = boxes.new_tensor([sx, sy, sx, sy])
    out = (boxes - offset) / scale
    h, w = geometry.source
    return torch.stack([out[:, 0].clamp(0, w), out[:, 1].clamp(0, h),
                        out[:, 2].clamp(0, w), out[:, 3].clamp(0, h)], dim=1)


def boxes_to_input(boxes: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """The inverse of `boxes_to_original` (no clipping): source pixels to model-input pixels."""
    (sy, sx), (top, left) = geometry.scale, geometry.pad
    return boxes * boxes.new_tensor([sx, sy, sx, sy]) + boxes.new_tensor([left, top, left, top])


def valid_region(geometry: Geometry) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the target that holds the image (not the padding)."""
    th, tw = geometry.target
    top, left = geometry.pad
    nh, nw = _resized_size(geometry)
    return max(top, 0), max(left, 0), min(top + nh, th), min(left + nw, tw)
