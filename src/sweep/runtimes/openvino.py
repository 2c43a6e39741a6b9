"""OpenVINO on the CPU (or an Intel GPU, `runtime.device=GPU`).

The model is the ONNX export that runtime=onnx uses (the same cache entry), or the user's file of
model=onnx; OpenVINO reads it, reshapes it to the job's static batch and resolution and compiles
it with `runtime.hint`, `runtime.streams` and `runtime.threads`. Compiled models are kept in
OpenVINO's own cache (``CACHE_DIR``, keyed by the model's content and the compile options)
under the artifact cache, so a second job with the same model and options loads the blob.

Precisions: fp32 (``INFERENCE_PRECISION_HINT=f32``: OpenVINO would otherwise pick bf16 or fp16
where the CPU has them), bf16 (the hint, on CPUs that declare BF16), int8 (NNCF post-training
quantisation of the fp32 model on the same calibration images as runtime=onnx's int8, cached as
IR). Inference is one synchronous request per batch, as every runtime of the sweep: with
hint=throughput the streams OpenVINO creates beyond the first stay idle (benchmarks/
openvino_peer.py compares with benchmark_app, which keeps them busy with parallel requests).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sweep.config import OpenVinoRuntimeConfig
from sweep.model_files import OnnxModel
from sweep.runtimes.base import Prepared, Runtime, UnsupportedError
from sweep.runtimes.onnx_export import (
    CALIB_BATCH,
    CALIB_SEED,
    MODEL_FILE,
    calibration_batches,
    check_file_precision,
    fetch_export,
    read_meta,
)

log = logging.getLogger(__name__)

INSTALL = "pip install 'inference-sweep[openvino]' (or pip install openvino nncf)"
IR_FILE = "model.xml"
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the rest stays f32


def import_openvino():
    try:
        import openvino
    except ImportError as e:
        raise UnsupportedError(f"runtime=openvino needs the openvino package: {INSTALL}") from e
    return openvino


def compile_config(cfg: OpenVinoRuntimeConfig, precision: str,
                   cache: Path | None) -> dict[str, str]:
    """OpenVINO's compile properties for the job: pure, so it can be tested anywhere."""
    config = {"PERFORMANCE_HINT": cfg.hint.upper(),
              "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]}
    if cfg.streams > 0:
        config["NUM_STREAMS"] = str(cfg.streams)
    if cfg.threads > 0:
        config["INFERENCE_NUM_THREADS"] = str(cfg.threads)
    if cache is not None:
        config["CACHE_DIR"] = str(cache)
    return config


def _text(value: object) -> str:
    """A property's value as OpenVINO writes it (f32, not <Type: 'float32'>)."""
    to_string = getattr(value, "to_string", None)
    return to_string() if callable(to_string) else str(value)


class OpenVinoRuntime(Runtime):
    name = "openvino"
    supported = {"cpu": ("fp32", "bf16", "int8")}
    model_kinds = ("torchvision", "timm", "exported", "onnx")
    cfg: OpenVinoRuntimeConfig

    @property
    def input_dtype(self) -> torch.dtype:
        return self.ctx.input_dtype or torch.float32  # bf16 is a compute hint: fp32 in and out

    @property
    def input_memory_format(self) -> torch.memory_format:
        return torch.contiguous_format

    def prepare(self, model: nn.Module | OnnxModel, example: torch.Tensor) -> Prepared:
        ov = import_openvino()
        ctx, cfg = self.ctx, self.cfg
        core = ov.Core()
        if cfg.device not in core.available_devices:
            raise UnsupportedError(
                f"runtime=openvino runtime.device={cfg.device} is not available here; OpenVINO "
                f"sees {', '.join(core.available_devices) or 'no device'}. Use "
                "runtime.device=CPU.")
        caps = core.get_property(cfg.device, "OPTIMIZATION_CAPABILITIES")
        if ctx.precision == "bf16" and "BF16" not in caps:
            raise UnsupportedError(
                f"runtime=openvino precision=bf16 needs a {cfg.device} with bf16 support "
                f"(OpenVINO reports {', '.join(caps)}); use precision=fp32 or int8.")
        info: dict[str, str] = {}
        t0 = time.perf_counter()
        if isinstance(model, OnnxModel):
            check_file_precision(self.name, model, ctx.precision, ("fp32", "bf16", "int8"))
            src, status, batch = model.path, "none", model.input.batch or CALIB_BATCH
        else:
            entry, status = fetch_export(ctx, model, example, cfg.opset)
            src, batch = entry / MODEL_FILE, CALIB_BATCH
            info.update(read_meta(entry))
        if ctx.precision == "int8":
            src, status, facts = self._quantised(ov, core, src, batch)
            info.update(facts)
        ov_model = core.read_model(str(src))
        if len(ov_model.inputs) != 1:
            raise UnsupportedError(f"runtime=openvino: the model has {len(ov_model.inputs)} "
                                   "inputs; the sweep feeds one image batch.")
        ov_model.reshape({ov_model.inputs[0].any_name:
                          [ctx.batch, 3, *ctx.size]})
        export_s = time.perf_counter() - t0

        blobs = Path(ctx.cache.root) / "openvino"
        blobs.mkdir(parents=True, exist_ok=True)
        before = set(blobs.iterdir())
        t0 = time.perf_counter()
        self.compiled = core.compile_model(ov_model, cfg.device,
                                           compile_config(cfg, ctx.precision, blobs))
        compile_s = time.perf_counter() - t0
        blob = "miss" if set(blobs.iterdir()) - before else "hit"
        self.request = self.compiled.create_infer_request()
        # a classifier's logits; any other task's every output
        self._outputs = 1 if ctx.task == "classify" else len(self.compiled.outputs)
        got = {k: _text(self.compiled.get_property(k)) for k in
               ("NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT",
                "OPTIMAL_NUMBER_OF_INFER_REQUESTS")}
        info.update(openvino_device=cfg.device, openvino_streams=got["NUM_STREAMS"],
                    openvino_threads=got["INFERENCE_NUM_THREADS"],
                    openvino_precision=got["INFERENCE_PRECISION_HINT"],
                    openvino_optimal_requests=got["OPTIMAL_NUMBER_OF_INFER_REQUESTS"],
                    openvino_compiled_cache=blob, compile_s=f"{compile_s:.2f}")
        if ctx.channels_last:
            info["channels_last"] = "ignored: OpenVINO takes NCHW input"
        return Prepared(export_s=export_s, cache=status, info=info)

    def _quantised(self, ov, core, src: Path, batch: int) -> tuple[Path, str, dict[str, str]]:
        """NNCF post-training quantisation of `src` (fp32 ONNX) on runtime=onnx's calibration
        images, cached as OpenVINO IR by the source's identity."""
        try:
            import nncf
        except ImportError as e:
            raise UnsupportedError(f"runtime=openvino precision=int8 needs nncf: {INSTALL}") from e
        ctx, n = self.ctx, self.cfg.calibration_batches
        parts = {**ctx.model_identity, "resolution": ctx.resolution, "opset": self.cfg.opset,
                 "openvino": ov.__version__, "nncf": nncf.__version__, "quant": "nncf-ptq",
                 "calibration": f"synthetic-{n}x{batch}-seed{CALIB_SEED}"}

        def build(folder: Path) -> None:
            batches = calibration_batches(ctx.resolution, n, batch=batch)
            fp32 = core.read_model(str(src))
            t0 = time.perf_counter()
            quantised = nncf.quantize(fp32, nncf.Dataset(batches), subset_size=len(batches))
            log.info("quantised to int8 with NNCF in %.1f s", time.perf_counter() - t0)
            ov.save_model(quantised, str(folder / IR_FILE), compress_to_fp16=False)
            (folder / "quant.json").write_text(json.dumps({
                "quant": f"NNCF post-training quantisation (defaults: symmetric int8 weights and "
                         f"activations) calibrated on {n}x{batch} synthetic images"}))

        entry, status = ctx.cache.fetch("openvino-int8", parts, build)
        try:
            facts = json.loads((entry / "quant.json").read_text())
        except (OSError, ValueError):
            facts = {}
        return entry / IR_FILE, status, facts

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for `x` (on the CPU); copied out, since the request's buffer is reused."""
        self.request.infer({0: x.numpy()}, share_inputs=True)
        if self._outputs > 1:
            return tuple(torch.from_numpy(np.array(self.request.get_output_tensor(i).data))
                         for i in range(self._outputs))
        return torch.from_numpy(np.array(self.request.get_output_tensor(0).data))

    def close(self) -> None:
        for attr in ("request", "compiled"):
            self.__dict__.pop(attr, None)
