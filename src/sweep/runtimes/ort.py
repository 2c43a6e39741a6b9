"""torch.onnx export + ONNX Runtime.

The model is the ONNX export of ``sweep.runtimes.onnx_export`` (one cache entry for every batch
size and every runtime that reads ONNX), or the user's file of model=onnx. int8 is static QDQ
quantisation of the fp32 export, cached on its own.

The session takes a contiguous NCHW input whatever ``flags.channels_last`` says; on CUDA,
``runtime.prefer_nhwc`` chooses ONNX Runtime's internal layout instead.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sweep.config import OnnxRuntimeConfig
from sweep.model_files import OnnxModel
from sweep.runtimes.base import Prepared, Runtime, UnsupportedError
from sweep.runtimes.onnx_export import (
    CALIB_BATCH,
    CALIB_SEED,
    INPUT,
    META_FILE,
    MODEL_FILE,
    calibration_batches,
    check_file_precision,
    export_parts,
    fetch_export,
    read_meta,
)

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"
GPU_INSTALL = "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"
OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
NP_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}


def select_providers(provider: str, device_type: str, available: Sequence[str]) -> list[str]:
    """The execution providers to ask for, best first, from `runtime.provider`, the job's device
    type and `onnxruntime.get_available_providers()`. Pure, so it can be tested anywhere."""
    if device_type == "cpu":
        if provider in ("auto", "cpu"):
            return [CPU_EP]
        raise UnsupportedError(
            f"runtime=onnx runtime.provider={provider} needs a GPU but the job runs on the CPU; "
            "use device=cuda, or runtime.provider=auto.")
    if provider == "cpu":
        raise UnsupportedError(
            "runtime=onnx runtime.provider=cpu runs on the CPU but the job's device is cuda; "
            "use device=cpu for ONNX Runtime on the CPU, or runtime.provider=auto.")
    if CUDA_EP not in available:
        raise UnsupportedError(
            f"runtime=onnx on {device_type} needs the GPU build of ONNX Runtime, but the installed "
            f"onnxruntime offers only {', '.join(available) or 'no providers'}. The two builds "
            f"cannot be installed side by side: {GPU_INSTALL}")
    if provider == "tensorrt":
        if TRT_EP not in available:
            raise UnsupportedError(
                "runtime=onnx runtime.provider=tensorrt needs an onnxruntime-gpu build with the "
                f"TensorRT execution provider; this one offers {', '.join(available)}. Install "
                "onnxruntime-gpu and TensorRT 10 (pip install tensorrt), or use "
                "runtime.provider=cuda.")
        return [TRT_EP, CUDA_EP, CPU_EP]
    return [CUDA_EP, CPU_EP]


def provider_options(name: str, cfg: OnnxRuntimeConfig, precision: str, device_id: int,
                     stream: int | None = None, shape: Sequence[int] = (),
                     engine_cache: Path | None = None,
                     input_name: str = INPUT) -> dict[str, str]:
    """ONNX Runtime's options for provider `name`.

    fp32 means TF32 off, so fp32 turns the CUDA provider's `use_tf32` off; every other precision
    leaves it on (its default). It must: with `use_tf32=0` ONNX Runtime's cuDNN-frontend
    convolutions deselect every tensor-core engine whatever the data type, so an fp16 model runs
    on CUDA cores, several times slower (benchmarks/results/README.md). An fp16
    model has no fp32 convolutions or matmuls for TF32 to touch; in an int8 QDQ model the
    convolutions between the Q/DQ nodes are fp32 and do run in TF32 (reported in the job's info).
    """
    if name == CUDA_EP:
        opts = {"device_id": str(device_id), "use_tf32": "0" if precision == "fp32" else "1",
                "prefer_nhwc": "1" if cfg.prefer_nhwc else "0"}
        if cfg.cuda_graph:
            opts["enable_cuda_graph"] = "1"
    elif name == TRT_EP:
        opts = {"device_id": str(device_id), "trt_fp16_enable": str(precision == "fp16"),
                "trt_int8_enable": str(precision == "int8")}
        if shape:  # one optimisation profile for the job's batch: no rebuild on the first call
            dims = f"{input_name}:{'x'.join(map(str, shape))}"
            opts.update(trt_profile_min_shapes=dims, trt_profile_opt_shapes=dims,
                        trt_profile_max_shapes=dims)
        if engine_cache is not None:
            opts.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(engine_cache),
                        trt_timing_cache_enable="True")
        if cfg.cuda_graph:
            opts["trt_cuda_graph_enable"] = "True"
    else:
        return {}
    if stream is not None:
        opts.update(has_user_compute_stream="1", user_compute_stream=str(stream))
    return opts


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantiser logs a line per tensor on the root logger at INFO."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(src: Path, dst: Path, batches: list[np.ndarray],
                  for_tensorrt: bool, input_name: str = INPUT) -> dict[str, str]:
    """Static QDQ quantisation with per-channel int8 weights; returns facts for the job's info.

    Activations are uint8 (U8S8), the fast path of ONNX Runtime's x86 and Arm CPU kernels,
    except for TensorRT, which takes only symmetric int8 activations."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {input_name: x}

    pre = dst.with_name("preprocessed.onnx")
    with _quiet_root_logger():
        try:
            quant_pre_process(str(src), str(pre))
            source, preprocessed = pre, True
        except Exception as e:  # optional step: quantise the raw export instead
            log.warning("quant_pre_process failed (%s: %s); quantising the export as it is",
                        type(e).__name__, e)
            source, preprocessed = src, False
        quantize_static(str(source), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QInt8 if for_tensorrt else QuantType.QUInt8,
                        extra_options={"ActivationSymmetric": for_tensorrt})
    pre.unlink(missing_ok=True)
    acts = "symmetric int8" if for_tensorrt else "uint8"
    return {"quant": f"static QDQ: int8 per-channel weights, {acts} activations, MinMax "
                     f"calibration on {len(batches)}x{len(batches[0])} synthetic images",
            "quant_preprocessed": str(preprocessed)}


def _input_name(model: nn.Module | OnnxModel) -> str:
    return model.input.name if isinstance(model, OnnxModel) else INPUT


class OnnxRuntime(Runtime):
    name = "onnx"
    # bf16 is left out: the CUDA provider's bf16 convolutions are missing or slow.
    supported = {"cpu": ("fp32", "fp16", "int8"), "cuda": ("fp32", "tf32", "fp16", "int8")}
    model_kinds = ("torchvision", "timm", "exported", "onnx")
    cfg: OnnxRuntimeConfig

    @property
    def prepare_phase(self) -> str:
        return "exporting"

    @property
    def input_memory_format(self) -> torch.memory_format:
        return torch.contiguous_format

    # --- prepare ------------------------------------------------------------------------

    def prepare(self, model: nn.Module | OnnxModel, example: torch.Tensor) -> Prepared:
        """`model`: an nn.Module, exported here, or the user's ONNX file, run as it is (fp32:
        in the file's own types) or quantised from it (int8)."""
        import onnxruntime as ort

        ctx, cfg = self.ctx, self.cfg
        if isinstance(model, OnnxModel):
            check_file_precision(self.name, model, ctx.precision)
        cuda = ctx.device.type == "cuda"
        providers = select_providers(cfg.provider, ctx.device.type, ort.get_available_providers())
        if providers[0] == TRT_EP and ctx.precision == "fp32":
            raise UnsupportedError(
                "runtime=onnx runtime.provider=tensorrt cannot run precision=fp32: TensorRT "
                "uses TF32 unless told not to, and ONNX Runtime has no option for that; use "
                "precision=tf32, or runtime.provider=cuda.")
        if cfg.cuda_graph and cuda and not cfg.io_binding:
            raise UnsupportedError("runtime=onnx runtime.cuda_graph=true needs "
                                   "runtime.io_binding=true (the graph replays fixed buffers).")

        t0 = time.perf_counter()
        path, status, info = self._artifact(model, example, providers[0] == TRT_EP)
        info = dict(info)
        export_s = time.perf_counter() - t0

        if cuda and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # after torch: finds the CUDA/cuDNN libraries torch loaded
        self._device_id = ctx.device.index if ctx.device.index is not None else (
            torch.cuda.current_device() if cuda else 0)
        self._stream = torch.cuda.Stream(ctx.device) if cuda else None
        shape = (ctx.batch, 3, *ctx.size)
        engine_cache = None
        if providers[0] == TRT_EP:
            # a user's file run as it is lies outside the cache: named by its content
            entry = model.sha256 if isinstance(model, OnnxModel) else path.parent.name
            engine_cache = Path(ctx.cache.root) / "ort-trt" / entry / ctx.precision
            engine_cache.mkdir(parents=True, exist_ok=True)
        stream = self._stream.cuda_stream if self._stream is not None else None
        t0 = time.perf_counter()
        self.session = ort.InferenceSession(
            str(path), sess_options=self._session_options(ort),
            providers=[(p, provider_options(p, cfg, ctx.precision, self._device_id, stream,
                                            shape, engine_cache, _input_name(model)))
                       for p in providers])
        session_s = time.perf_counter() - t0
        got = self.session.get_providers()
        if got[0] != providers[0]:  # ONNX Runtime falls back to the CPU with only a log line
            raise UnsupportedError(
                f"runtime=onnx asked ONNX Runtime for {providers[0]} but the session got "
                f"{', '.join(got)}: its libraries did not load (see ONNX Runtime's error above; "
                "onnxruntime-gpu needs CUDA 12 and cuDNN 9, and TensorRT 10 for TensorRT).")

        self._in_name = self.session.get_inputs()[0].name
        outputs = self.session.get_outputs()
        # a classifier's logits; any other task's every output
        self._out_names = [o.name for o in (outputs[:1] if ctx.task == "classify" else outputs)]
        self._dtype = self.input_dtype
        self._bound: tuple[int, tuple[int, ...]] | None = None  # (data_ptr, shape) bound last
        # IO binding binds one output whose axes after the batch are fixed (a YOLO head's, a
        # segmenter's); box counts that vary per call come back through the host
        fixed = all(isinstance(d, int) for d in outputs[0].shape[1:])
        bind = cuda and cfg.io_binding and len(self._out_names) == 1 and (
            ctx.task == "classify" or fixed)
        self._binding = self.session.io_binding() if bind else None
        if cuda and cfg.io_binding and not bind:
            info["io_binding"] = (f"off: {len(self._out_names)} outputs of task={ctx.task} "
                                  "come back through the host")
        self._in_buf: torch.Tensor | None = None
        if self._binding is not None and cfg.cuda_graph:
            self._in_buf = torch.empty(shape, dtype=self._dtype, device=ctx.device)
            self._bind(self._in_buf)

        # The options themselves are in the job's params and the versions in its env.
        info.update(provider=got[0], providers=",".join(got), session_s=f"{session_s:.2f}")
        if not cuda and cfg.cuda_graph:
            info["cuda_graph"] = "ignored on the CPU"
        if ctx.precision == "int8" and providers[0] == CUDA_EP:
            info["int8_note"] = ("the CUDA provider has no int8 convolutions: QDQ nodes run "
                                 "around fp32 kernels (TF32 on); runtime.provider=tensorrt "
                                 "runs int8")
        if ctx.channels_last:
            info["channels_last"] = "ignored: ONNX Runtime takes NCHW input (see prefer_nhwc)"
        return Prepared(export_s=export_s, cache=status, info=info)

    def _artifact(self, model: nn.Module | OnnxModel, example: torch.Tensor,
                  trt: bool) -> tuple[Path, str, dict[str, str]]:
        """The cached model file for this job, exporting (and quantising) only on a miss."""
        import onnxruntime as ort

        ctx, cfg = self.ctx, self.cfg
        if isinstance(model, OnnxModel):
            if ctx.precision != "int8":
                return model.path, "none", {}
            return self._quantised_file(model, trt, ort.__version__)
        half = ctx.precision == "fp16"
        parts = export_parts(ctx, cfg.opset, half)

        def export() -> tuple[Path, str]:
            return fetch_export(ctx, model, example, cfg.opset, half)

        if ctx.precision != "int8":
            entry, status = export()
            return entry / MODEL_FILE, status, read_meta(entry)

        qparts = {**parts, "quant": "qdq-per-channel-minmax",
                  "activations": "s8-symmetric" if trt else "u8",
                  "calibration": f"synthetic-{cfg.calibration_batches}x{CALIB_BATCH}"
                                 f"-seed{CALIB_SEED}"}
        fp32_status = "hit"

        def build_int8(folder: Path) -> None:
            nonlocal fp32_status
            src, fp32_status = export()
            batches = calibration_batches(ctx.resolution, cfg.calibration_batches)
            t0 = time.perf_counter()
            facts = quantize_int8(src / MODEL_FILE, folder / MODEL_FILE, batches, trt)
            log.info("quantised to int8 in %.1f s", time.perf_counter() - t0)
            (folder / META_FILE).write_text(json.dumps({**read_meta(src), **facts}))

        entry, status = ctx.cache.fetch("onnx-int8", qparts, build_int8)
        info = read_meta(entry)
        if status != "hit":
            info["fp32_export_cache"] = fp32_status
        return entry / MODEL_FILE, status, info

    def _quantised_file(self, model: OnnxModel, trt: bool,
                        version: str) -> tuple[Path, str, dict[str, str]]:
        """The user's file, quantised as an export is (same calibration images), cached by the
        file's content."""
        n, batch = self.cfg.calibration_batches, model.input.batch or CALIB_BATCH
        parts = {**self.ctx.model_identity, "resolution": self.ctx.resolution,
                 "onnxruntime": version, "quant": "qdq-per-channel-minmax",
                 "activations": "s8-symmetric" if trt else "u8",
                 "calibration": f"synthetic-{n}x{batch}-seed{CALIB_SEED}"}

        def build(folder: Path) -> None:
            batches = calibration_batches(self.ctx.resolution, n, batch=batch)
            facts = quantize_int8(model.path, folder / MODEL_FILE, batches, trt,
                                  model.input.name)
            (folder / META_FILE).write_text(json.dumps(facts))

        entry, status = self.ctx.cache.fetch("onnx-int8-file", parts, build)
        return entry / MODEL_FILE, status, read_meta(entry)

    def _session_options(self, ort: Any) -> Any:
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                              OPT_LEVELS[self.cfg.graph_optimization])
        if self.cfg.intra_op_threads > 0:
            so.intra_op_num_threads = self.cfg.intra_op_threads
        if self.cfg.inter_op_threads > 0:
            so.inter_op_num_threads = self.cfg.inter_op_threads
        return so

    def _bind(self, x: torch.Tensor) -> None:
        """Bind `x` as the input and a new output tensor of the matching batch: once per input
        buffer and shape, not per call."""
        shape = tuple(x.shape)
        self._binding.bind_input(self._in_name, "cuda", self._device_id, NP_DTYPES[self._dtype],
                                 shape, x.data_ptr())
        if self._bound is None or self._bound[1] != shape:
            out_shape = [shape[0] if not isinstance(d, int) else d
                         for d in self.session.get_outputs()[0].shape]
            self._out = torch.empty(out_shape, dtype=self._dtype, device=x.device)
            self._binding.bind_output(self._out_names[0], "cuda", self._device_id,
                                      NP_DTYPES[self._dtype], out_shape, self._out.data_ptr())
        self._bound = (x.data_ptr(), shape)

    # --- infer --------------------------------------------------------------------------

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for `x`. On CUDA with IO binding they land in a buffer that the next call
        overwrites (as with CUDA graphs): clone them to keep them."""
        if self._binding is not None:
            current = torch.cuda.current_stream(x.device)
            if self._in_buf is not None:
                if x.shape != self._in_buf.shape:  # copy_ would broadcast a smaller batch
                    raise ValueError(f"runtime.cuda_graph=true was prepared for input "
                                     f"{tuple(self._in_buf.shape)}, got {tuple(x.shape)}")
                self._in_buf.copy_(x)
            elif self._bound != (x.data_ptr(), tuple(x.shape)):
                self._bind(x)
            # ONNX Runtime works on its own stream: order it after the input's writer, and
            # whatever reads the output after it.
            self._stream.wait_stream(current)
            self.session.run_with_iobinding(self._binding)
            current.wait_stream(self._stream)
            return self._out
        if len(self._out_names) > 1:  # a task's several outputs, as the model returns them
            outs = self.session.run(self._out_names, {self._in_name: x.cpu().numpy()})
            return tuple(torch.from_numpy(o).to(x.device) for o in outs)
        if x.device.type == "cpu":
            out = self.session.run(self._out_names, {self._in_name: x.numpy()})[0]
            return torch.from_numpy(out)
        # CUDA without IO binding: through the host, which is what io_binding=false measures.
        out = self.session.run(self._out_names, {self._in_name: x.cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)

    def close(self) -> None:
        for attr in ("_binding", "session", "_out", "_in_buf", "_stream"):
            self.__dict__.pop(attr, None)
