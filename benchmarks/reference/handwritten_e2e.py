"""ANCHORS.md's hand-written end-to-end probe, re-measured beside pipeline=gpu: resnet18 256 bs32
fp16, 64 JPEGs of 512x512 held in memory, decoded on the GPU, resized, inferred, top-1 to the host.
Nothing of this project is used (torch, torchvision, PIL only), so it bounds what torchvision's
nvJPEG path can do on this machine:

    per-image    decode_jpeg(one, device="cuda") and one resize per image (ANCHORS.md's probe)
    batched      decode_jpeg(list of 32, device="cuda"), one resize of the stacked batch
    decode-only  the batched decode alone, no resize, no inference
    pure         the model alone on a ready batch

    python3 benchmarks/reference/handwritten_e2e.py [--files DIR] [--write DIR]

--files DIR: use the first 64 JPEGs under DIR instead (e.g. a set from `python -m sweep.demo_data
generate`, to compare on the very files a sweep reads); --write DIR: also save the generated
files as an image folder (DIR/0_probe/NNN.jpg) for `data=imagefolder data.root=DIR`.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

BATCH, RES, FILES = 32, 256, 64
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def jpegs(folder: Path | None, write: Path | None) -> list[torch.Tensor]:
    if folder is not None:
        paths = sorted(folder.rglob("*.jpg"))[:FILES]
        return [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    if write is not None:
        (write / "0_probe").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(FILES):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((512, 512), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
        if write is not None:
            (write / "0_probe" / f"{len(out):03d}.jpg").write_bytes(buf.getvalue())
    return out


def ms_per_img(step, seconds: float = 2.0) -> float:
    for _ in range(3):
        step(0)
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(n)
        n += 1
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - t0) / (n * BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=Path)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name(), flush=True)
    files = jpegs(args.files, args.write)
    print(f"{len(files)} JPEGs from {args.files or 'the generator'}, "
          f"{sum(f.numel() for f in files) / len(files) / 1e3:.0f} kB each", flush=True)
    mean, std = MEAN.cuda(), STD.cuda()
    model = torchvision.models.get_model("resnet18").eval().cuda().half()

    def batch_files(i: int) -> list[torch.Tensor]:
        start = (i * BATCH) % len(files)
        return (files + files)[start:start + BATCH]

    def infer(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(((x.float() - mean) / std).half()).argmax(1).cpu()

    def per_image(i: int) -> None:
        imgs = [decode_jpeg(f, mode=ImageReadMode.RGB, device="cuda") for f in batch_files(i)]
        x = torch.stack([torch.nn.functional.interpolate(
            im[None].float(), size=(RES, RES), mode="bilinear", antialias=True)[0] for im in imgs])
        infer(x)

    def decoded(i: int) -> torch.Tensor:
        return torch.stack(decode_jpeg(batch_files(i), mode=ImageReadMode.RGB, device="cuda"))

    def batched(i: int) -> None:
        x = torch.nn.functional.interpolate(decoded(i).float(), size=(RES, RES),
                                            mode="bilinear", antialias=True)
        infer(x)

    ready = torch.nn.functional.interpolate(decoded(0).float(), size=(RES, RES),
                                            mode="bilinear", antialias=True)
    pure = ms_per_img(lambda i: infer(ready))
    for name, step in (("per-image", per_image), ("batched", batched),
                       ("decode-only", decoded), ("pure", lambda i: infer(ready))):
        ms = pure if name == "pure" else ms_per_img(step)
        print(f"{name:12s} {ms:.4f} ms/img  {ms / pure:.2f}x pure inference", flush=True)


if __name__ == "__main__":
    main()
