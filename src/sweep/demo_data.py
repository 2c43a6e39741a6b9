"""A generated, labelled image folder, and a classifier fitted to one, so that accuracy means
something on a machine without a real dataset.

    python -m sweep.demo_data generate data/demo --classes 4 --per-class 8
    python -m sweep.demo_data generate data/demo-train --classes 4 --per-class 24 --seed 1
    python -m sweep.demo_data fit-head data/demo-train head.pth --resolution 64

Generated sets are deterministic for a given seed: each class has its own dominant colour and
stripe direction, so a classifier can separate them, with mixed sizes, mixed JPEG qualities and
every fourth file a PNG (`--png-every`).
"""

from __future__ import annotations

import argparse
import colorsys
import math
import sys
from pathlib import Path

from sweep.data import scan
from sweep.errors import ConfigError

_NAMED = [("red", (210, 45, 40)), ("green", (45, 170, 60)), ("blue", (40, 75, 215)),
          ("yellow", (230, 205, 45)), ("magenta", (200, 55, 200)), ("cyan", (45, 200, 210)),
          ("orange", (240, 135, 30)), ("purple", (115, 65, 170))]


def class_colour(c: int, classes: int) -> tuple[str, tuple[int, int, int]]:
    if classes <= len(_NAMED):
        return _NAMED[c]
    r, g, b = colorsys.hsv_to_rgb(c / classes, 0.8, 0.85)
    return f"hue{c:03d}", (int(r * 255), int(g * 255), int(b * 255))


def make_image(c: int, classes: int, width: int, height: int, seed: int):
    """One image of class `c`: its colour under stripes at its own angle, a little noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng([seed, c, width, height])
    _, colour = class_colour(c, classes)
    angle = math.pi * c / classes
    period = rng.uniform(6, 14)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period
    stripes = 0.5 + 0.5 * np.sin(phase + rng.uniform(0, 2 * math.pi))
    shade = rng.uniform(0.75, 1.1) * (0.7 + 0.3 * stripes)
    pixels = np.asarray(colour, np.float32) * shade[..., None]
    pixels += rng.normal(0, 10, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def generate(out: Path, classes: int = 4, per_class: int = 8, seed: int = 0,
             min_size: int = 40, max_size: int = 160, png_every: int = 4) -> list[Path]:
    """Write a labelled set: `out/<NN>_<colour>/<NNN>.jpg|png`, sizes from min to max_size, every
    `png_every`-th file of a class a PNG (0: none)."""
    import numpy as np

    if classes < 1 or per_class < 1 or not 8 <= min_size <= max_size:
        raise ValueError("need classes >= 1, per_class >= 1 and 8 <= min_size <= max_size")
    rng = np.random.default_rng(seed)
    written = []
    for c in range(classes):
        name, _ = class_colour(c, classes)
        folder = out / f"{c:02d}_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
            img = make_image(c, classes, w, h, seed * 100_003 + i)
            if png_every and i % png_every == png_every - 1:
                path = folder / f"{i:03d}.png"
                img.save(path)
            else:
                path = folder / f"{i:03d}.jpg"
                img.save(path, quality=int(70 + (i * 7) % 26))
            written.append(path)
    return written


# --- a classifier that knows the generated classes ----------------------------------------------

def fit_head(root: Path, out: Path, model_name: str = "resnet18", resolution: int = 64,
             seed: int = 0, ridge: float = 1e-3) -> float:
    """Fit the last Linear layer of a randomly initialised `model_name` (num_classes = the
    folder's classes) by ridge regression on its features of the folder's images, preprocessed
    as every pipeline does; save the whole state dict to `out`. Returns training accuracy (%)."""
    import torch

    from sweep.accuracy import last_linear
    from sweep.config import ModelConfig
    from sweep.models import build_model
    from sweep.pipelines.base import normalize, read_rgb, resize_pil

    images = scan(str(root), 1 << 30)
    model = build_model(ModelConfig(name=model_name, num_classes=len(images.classes), seed=seed))
    head = last_linear(model)
    x = torch.stack([normalize(resize_pil(read_rgb(p), resolution)) for p, _ in images.items])
    labels = torch.tensor([label for _, label in images.items])
    feats: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: feats.append(args[0].flatten(1)))
    try:
        with torch.no_grad():
            for chunk in x.split(32):
                model(chunk)
    finally:
        hook.remove()
    f = torch.cat(feats).double()
    mu = f.mean(0)
    fc = f - mu
    y = torch.nn.functional.one_hot(labels, len(images.classes)).double()
    y_mean = y.mean(0)
    gram = fc.T @ fc
    gram += ridge * gram.trace() / gram.shape[0] * torch.eye(gram.shape[0], dtype=gram.dtype)
    w = torch.linalg.solve(gram, fc.T @ (y - y_mean))  # [features, classes]
    with torch.no_grad():
        head.weight.copy_(w.T.to(head.weight.dtype))
        head.bias.copy_((y_mean - mu @ w).to(head.bias.dtype))
        acc = (model(x).argmax(1) == labels).double().mean().item() * 100
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    return acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.demo_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write a small labelled image set (JPEG and PNG)")
    gen.add_argument("out", type=Path)
    gen.add_argument("--classes", type=int, default=4)
    gen.add_argument("--per-class", type=int, default=8)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--min-size", type=int, default=40)
    gen.add_argument("--max-size", type=int, default=160)
    gen.add_argument("--png-every", type=int, default=4, help="every N-th file a PNG (0: none)")
    fit = sub.add_parser("fit-head", help="fit a model's classifier to a labelled folder")
    fit.add_argument("root", type=Path)
    fit.add_argument("out", type=Path, help="where to save the state dict (.pth)")
    fit.add_argument("--model", default="resnet18")
    fit.add_argument("--resolution", type=int, default=64)
    fit.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            files = generate(args.out, args.classes, args.per_class, args.seed, args.min_size,
                             args.max_size, args.png_every)
            print(f"wrote {len(files)} images in {args.classes} classes to {args.out}")
        else:
            acc = fit_head(args.root, args.out, args.model, args.resolution, args.seed)
            n = len(scan(str(args.root), 1 << 30).classes)
            print(f"saved {args.out} (training accuracy {acc:.1f}%); use it with "
                  f"model.name={args.model} model.weights={args.out} model.num_classes={n}")
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder that cannot be made or written: said, not a traceback
        print(f"error: {e.filename or args.out}: {e.strerror or e}; give a folder you can "
              "write", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
