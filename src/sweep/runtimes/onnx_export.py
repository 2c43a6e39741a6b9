"""The ONNX export and the int8 calibration images shared by the runtimes that read ONNX
(runtime=onnx, openvino; runtime=trt calibrates on the same images).

The model is exported once per (weights, resolution, dtype, opset, versions) into the artifact
cache, with a dynamic batch axis, so every batch size of a sweep shares one export, and every
runtime that reads ONNX shares one cache entry.

Exporter: the TorchScript one (``dynamo=False``). With torch 2.14 it exports torchvision
classifiers in well under half the time of the torch.export-based one, into a single file, and
it keeps the batch axis dynamic where the new exporter specialises it for convnext, ViT and Swin
("Constraints violated (batch)"). The new exporter is only a fallback, should the old one fail.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sweep.model_files import OnnxModel
from sweep.runtimes.base import JobContext, UnsupportedError

log = logging.getLogger(__name__)

INPUT, OUTPUT = "input", "logits"
MODEL_FILE = "model.onnx"
META_FILE = "export.json"
EXPORTER = "torchscript"
CALIB_BATCH = 4  # images per calibration batch
CALIB_SEED = 7_000_000  # far from the seeds the job draws its inputs from (data.seed * 1000 + k)


def check_file_precision(runtime: str, model: OnnxModel, precision: str,
                         allowed: tuple[str, ...] = ("fp32", "int8")) -> None:
    """A user's ONNX file runs in its own types (precision=fp32) or is quantised from fp32
    (precision=int8); converting it to another float type is the user's export to make."""
    if precision not in allowed:
        raise UnsupportedError(
            f"runtime={runtime} with model=onnx runs the file as it is with precision=fp32 "
            f"(an fp16 file stays fp16) or quantises it with precision=int8; precision="
            f"{precision} would convert the file: use precision=fp32, or export the model in "
            f"{precision} yourself.")
    if precision == "int8" and model.input.dtype != "float32":
        raise UnsupportedError(
            f"runtime={runtime} precision=int8 quantises an fp32 file, and model.path="
            f"{model.label} takes {model.input.dtype} input; use precision=fp32 to run it as "
            "it is.")


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int,
                static_batch: bool = False) -> str:
    """Export `model` (in the dtype of `example`) with a dynamic batch axis; returns the exporter
    that was used. `static_batch`: at `example`'s batch, for a torchvision detector, whose
    forward loops over the images (its export has boxes, labels, scores per traced image)."""
    if static_batch:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's warnings about the detector's loops
            torch.onnx.export(model, (example,), str(path), input_names=[INPUT],
                              opset_version=opset, dynamo=False)
        return EXPORTER
    # Batch 2: a batch-1 example lets exporters bake the batch size into reshapes.
    x = example[:1].repeat(2, 1, 1, 1)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript exporter"
            torch.onnx.export(model, (x,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                              opset_version=opset, dynamo=False,
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
        return EXPORTER
    except Exception as e:  # any failure: try the other exporter before giving up
        log.warning("TorchScript ONNX export failed (%s: %s); trying torch.export's exporter",
                    type(e).__name__, e)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                          opset_version=opset, dynamo=True, external_data=False,
                          dynamic_shapes=({0: batch},))
    return "dynamo"


def calibration_images(resolution: int, n: int, seed: int = CALIB_SEED,
                       batch: int = CALIB_BATCH) -> list[torch.Tensor]:
    """`n` batches of random smooth images (the kind the job feeds) from a seeded generator: the
    same calibration on every machine, and not the images the job checks correctness on.
    `batch`: images per batch (a file with a static batch takes only that)."""
    from sweep.accuracy import synthetic_images

    return [synthetic_images(max(batch, CALIB_BATCH), resolution, seed + i)[:batch]
            for i in range(n)]


def calibration_batches(resolution: int, n: int, seed: int = CALIB_SEED,
                        batch: int = CALIB_BATCH) -> list[np.ndarray]:
    """`calibration_images` as numpy arrays (ONNX Runtime's and NNCF's calibration readers)."""
    return [x.numpy() for x in calibration_images(resolution, n, seed, batch)]


def export_parts(ctx: JobContext, opset: int, half: bool) -> dict[str, object]:
    """What names an ONNX export in the artifact cache. One export serves fp32, tf32 and int8
    (tf32 is a provider option) and every runtime that reads ONNX."""
    import onnxruntime as ort

    parts = {**ctx.model_identity, "resolution": ctx.resolution,
             "dtype": "fp16" if half else "fp32", "opset": opset,
             "torch": torch.__version__, "onnxruntime": ort.__version__, "exporter": EXPORTER}
    if ctx.task == "detect":  # exported at the job's batch (export_onnx's static_batch)
        parts.update(task="detect", batch=ctx.batch)
    return parts


def fetch_export(ctx: JobContext, model: nn.Module, example: torch.Tensor, opset: int,
                 half: bool = False) -> tuple[Path, str]:
    """The cache folder of the ONNX export of `model` (MODEL_FILE inside), exporting on a miss;
    and the cache status."""

    def build_export(folder: Path) -> None:
        m = copy.deepcopy(model).half() if half else model  # leave the caller's model fp32
        x = example.to(torch.float16 if half else torch.float32)
        t0 = time.perf_counter()
        used = export_onnx(m, x, folder / MODEL_FILE, opset, static_batch=ctx.task == "detect")
        log.info("exported %s to ONNX with the %s exporter in %.1f s",
                 ctx.model_identity.get("arch", "model"), used, time.perf_counter() - t0)
        (folder / META_FILE).write_text(json.dumps({"exporter": used}))

    return ctx.cache.fetch("onnx", export_parts(ctx, opset, half), build_export)


def read_meta(entry: Path) -> dict[str, str]:
    """The facts an export or quantisation recorded beside its model file."""
    try:
        return {k: str(v) for k, v in json.loads((entry / META_FILE).read_text()).items()}
    except (OSError, ValueError):
        return {}
