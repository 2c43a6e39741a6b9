"""Small labelled sets made on demand, deterministic by seed (a few dozen KB): a `coco` folder
(JPEGs of coloured rectangles with their boxes as COCO annotations) and a `masks` folder (the
same kind of images with PNG masks of each rectangle's class)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLASSES = ("red", "green", "blue")  # category ids 1..3 in COCO, mask classes 1..3 (0: background)
COLOURS = ((220, 40, 40), (40, 200, 60), (50, 70, 230))


def _scene(rng: np.random.Generator, size: tuple[int, int], boxes: int):
    """An image (H, W, 3) uint8 with `boxes` non-overlapping rectangles, its class mask, and the
    rectangles as (x0, y0, x1, y1, class index)."""
    h, w = size
    image = np.full((h, w, 3), 90, np.uint8) + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    rects: list[tuple[int, int, int, int, int]] = []
    for _ in range(50 * boxes):  # rejection sampling: rectangles apart from each other
        if len(rects) == boxes:
            break
        bw, bh = rng.integers(w // 8, w // 3), rng.integers(h // 8, h // 3)
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        x1, y1, c = x0 + int(bw), y0 + int(bh), int(rng.integers(0, len(CLASSES)))
        if any(x0 < r[2] + 2 and r[0] < x1 + 2 and y0 < r[3] + 2 and r[1] < y1 + 2
               for r in rects):
            continue
        image[y0:y1, x0:x1] = COLOURS[c]
        mask[y0:y1, x0:x1] = c + 1
        rects.append((x0, y0, x1, y1, c))
    return image, mask, rects


def make_coco(root: str | Path, n: int = 8, size: tuple[int, int] = (96, 160), seed: int = 0,
              boxes: int = 3) -> Path:
    """`n` JPEGs of size [height, width] under `root`/images with `root`/annotations.json."""
    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n):
        image, _, rects = _scene(rng, size, boxes)
        name = f"images/{i:04d}.jpg"
        Image.fromarray(image).save(root / name, quality=90)
        images.append({"id": i + 1, "file_name": name, "height": size[0], "width": size[1]})
        for x0, y0, x1, y1, c in rects:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                         "iscrowd": 0})
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]
    (root / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": categories}))
    return root


def make_masks(root: str | Path, n: int = 8, size: tuple[int, int] = (96, 160), seed: int = 0,
               boxes: int = 3) -> Path:
    """`n` images under `root`/images with their class masks (PNG) under `root`/masks."""
    from PIL import Image

    root = Path(root)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, mask, _ = _scene(rng, size, boxes)
        Image.fromarray(image).save(root / "images" / f"{i:04d}.jpg", quality=90)
        Image.fromarray(mask).save(root / "masks" / f"{i:04d}.png")
    return root
