"""Torch-TensorRT (ir="dynamo"), engines cached in the sweep's artifact cache.

NOT RUN in this project's environment: TensorRT could not be installed where this adapter was
written, so only the parts before the TensorRT call (settings, cache key, error messages,
device and library checks) are tested. It is written against the public API of
torch-tensorrt 2.x: ``torch_tensorrt.compile(..., ir="dynamo")``, ``torch_tensorrt.Input``,
``torch_tensorrt.save(..., inputs=...)`` / ``torch_tensorrt.load(...).module()``, and for int8
NVIDIA ModelOpt (``modelopt.torch.quantization.quantize``, then ``torch.export`` under
ModelOpt's ``export_torch_mode`` and ``torch_tensorrt.dynamo.compile``), the route
Torch-TensorRT documents for INT8 with the dynamo frontend (its TorchScript-era calibrators
are gone).

Precisions (CUDA only):

- fp32: fp32 model and input, TF32 off (``disable_tf32=True``); tf32: the same with TF32 on.
- fp16 / bf16: the model is cast to half and takes a half input. With the older weak typing
  (``enabled_precisions``) and with the newer explicit typing (where ``enabled_precisions`` is
  deprecated and the network follows the model's dtypes) this gives the same half engine, so
  the job times half in, half out, like eager torch at the same precision.
- int8: fp32 model with quantize/dequantize nodes inserted and calibrated by ModelOpt
  (``INT8_DEFAULT_CFG``: per-channel weights, per-tensor activations) on
  ``runtime.calibration_batches`` batches of the job's kind of synthetic images (seeded apart
  from the ones the job checks correctness on), then exported and built with int8 enabled;
  the input stays fp32.

The engine takes a contiguous NCHW input whatever ``flags.channels_last`` says: TensorRT picks
its own internal layouts, and the job's info says so.

A user's ONNX file (model=onnx) is built by TensorRT itself, without Torch-TensorRT:
``sweep.runtimes.tensorrt_onnx`` (also not run here).
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sweep.config import TrtRuntimeConfig
from sweep.model_files import OnnxModel
from sweep.runtimes import tensorrt_onnx
from sweep.runtimes.base import DTYPES, JobContext, Prepared, Runtime, UnsupportedError
from sweep.runtimes.onnx_export import CALIB_BATCH, CALIB_SEED, calibration_images

log = logging.getLogger(__name__)

INSTALL_HINT = ("pip install 'inference-sweep[trt]' --extra-index-url https://pypi.nvidia.com, "
                "or directly pip install torch-tensorrt tensorrt (torch-tensorrt releases follow "
                "torch's: {minor}.x for torch {torch}, built for the same CUDA)")
MODELOPT_HINT = "pip install nvidia-modelopt"
ENGINE_FILE = "model.ep"


def _torch_minor() -> str:
    return ".".join(torch.__version__.split("+")[0].split(".")[:2])


def missing_library_error(cause: BaseException) -> UnsupportedError:
    """The error for a Torch-TensorRT that cannot be imported, naming what to install."""
    hint = INSTALL_HINT.format(minor=_torch_minor(), torch=torch.__version__)
    return UnsupportedError(
        f"runtime=trt needs Torch-TensorRT, which cannot be imported here "
        f"({type(cause).__name__}: {cause}). Install it with: {hint}."
    )


def missing_modelopt_error(cause: BaseException) -> UnsupportedError:
    return UnsupportedError(
        f"runtime=trt precision=int8 calibrates with NVIDIA ModelOpt, which cannot be imported "
        f"here ({type(cause).__name__}: {cause}). Install it with: {MODELOPT_HINT}."
    )


def import_torch_tensorrt() -> Any:
    """`torch_tensorrt`, or an UnsupportedError that says what to install."""
    try:
        import torch_tensorrt
    except Exception as e:  # not installed, or built for another torch / CUDA
        raise missing_library_error(e) from e
    return torch_tensorrt


def import_modelopt_quantization() -> Any:
    """`modelopt.torch.quantization`, or an UnsupportedError that says what to install."""
    try:
        import modelopt.torch.quantization as mtq
    except Exception as e:
        raise missing_modelopt_error(e) from e
    return mtq


def input_shape(ctx: JobContext) -> tuple[int, int, int, int]:
    return (ctx.batch, 3, *ctx.size)


def compile_settings(cfg: TrtRuntimeConfig, ctx: JobContext) -> dict[str, Any]:
    """Keyword arguments for ``torch_tensorrt.compile`` other than the module and inputs."""
    precisions = {"fp32": {torch.float32}, "tf32": {torch.float32},
                  "fp16": {torch.float16}, "bf16": {torch.bfloat16}, "int8": {torch.int8}}
    index = ctx.device.index if ctx.device.index is not None else 0
    return {
        "ir": "dynamo",
        "enabled_precisions": precisions[ctx.precision],
        "disable_tf32": ctx.precision != "tf32",
        "workspace_size": int(cfg.workspace_gb * (1 << 30)),
        "optimization_level": cfg.optimization_level,
        "device": torch.device("cuda", index),
    }


def cache_parts(cfg: TrtRuntimeConfig, ctx: JobContext, env: dict[str, str]) -> dict[str, object]:
    """Everything that determines the engine: model, shape, precision, builder options,
    library versions and the GPU (`env`, from `build_env`)."""
    parts: dict[str, object] = {
        **ctx.model_identity,
        "runtime": "trt",
        "shape": list(input_shape(ctx)),
        "input_dtype": str(DTYPES[ctx.precision]),
        "precision": ctx.precision,
        "workspace_gb": cfg.workspace_gb,
        "optimization_level": cfg.optimization_level,
        **env,
    }
    if ctx.precision == "int8":
        parts.update(calibration_batches=cfg.calibration_batches,
                     calibration=f"synthetic-{CALIB_BATCH}-seed{CALIB_SEED}",
                     quant_cfg="INT8_DEFAULT_CFG")
    return parts


def build_env(ctx: JobContext, device: torch.device) -> dict[str, str]:
    """Library versions and GPU identity for the cache key (needs a GPU)."""
    from importlib import metadata

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "none"

    major, minor = torch.cuda.get_device_capability(device)
    env = {"torch": torch.__version__, "torch_tensorrt": version("torch-tensorrt"),
           "tensorrt": version("tensorrt"), "gpu": torch.cuda.get_device_name(device),
           "compute_capability": f"{major}.{minor}"}
    if ctx.precision == "int8":
        env["modelopt"] = version("nvidia-modelopt")
    return env


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, list | tuple) else out


class TensorRTRuntime(Runtime):
    """A TensorRT engine built by Torch-TensorRT from the model, run through its torch module."""

    name = "trt"
    supported = {"cuda": ("fp32", "tf32", "fp16", "bf16", "int8")}
    model_kinds = ("torchvision", "timm", "onnx")  # torch.export's GraphModule: not tried here

    @property
    def prepare_phase(self) -> str:
        return "calibrating and compiling" if self.ctx.precision == "int8" else "compiling"

    @classmethod
    def check_supported(cls, device: torch.device, precision: str,
                        model_kind: str = "torchvision") -> None:
        """Fail at once: no GPU, no Torch-TensorRT (or ModelOpt for int8; TensorRT itself for
        an ONNX file), or a precision TensorRT does not run. Every problem found is named in one
        message."""
        problems = []
        if device.type != "cuda":
            problems.append(f"runtime=trt needs an NVIDIA GPU, and this job's device is "
                            f"{device.type} (use runtime=torch, compile or onnx on the CPU)")
        try:
            if model_kind == "onnx":
                tensorrt_onnx.import_tensorrt()
            else:
                import_torch_tensorrt()
                if precision == "int8":
                    import_modelopt_quantization()
        except UnsupportedError as e:
            problems.append(str(e).rstrip("."))
        if problems:
            raise UnsupportedError("; ".join(problems) + ".")
        super().check_supported(device, precision, model_kind)

    @property
    def input_memory_format(self) -> torch.memory_format:
        return torch.contiguous_format  # the engine's input binding is linear NCHW

    def prepare(self, model: nn.Module | OnnxModel, example: torch.Tensor) -> Prepared:
        kind = "onnx" if isinstance(model, OnnxModel) else self.ctx.model_kind
        # also when called without create_runtime
        self.check_supported(self.ctx.device, self.ctx.precision, kind)
        device = compile_settings(self.cfg, self.ctx)["device"]
        if self.ctx.precision == "bf16" and torch.cuda.get_device_capability(device) < (8, 0):
            raise UnsupportedError(
                f"runtime=trt precision=bf16 needs compute capability 8.0 or newer (Ampere); "
                f"{torch.cuda.get_device_name(device)} has "
                f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}.")
        if isinstance(model, OnnxModel):
            return self._prepare_file(model, device)
        torch_tensorrt = import_torch_tensorrt()
        x = example.to(device, self.input_dtype).contiguous()
        parts = cache_parts(self.cfg, self.ctx, build_env(self.ctx, device))
        built: dict[str, nn.Module] = {}

        def build(folder: Path) -> None:
            trt_gm = self._compile(torch_tensorrt, model, x, device)
            torch_tensorrt.save(trt_gm, str(folder / ENGINE_FILE), inputs=[x])
            built["module"] = trt_gm

        t0 = time.perf_counter()
        with torch.cuda.device(device):
            folder, status = self.ctx.cache.fetch("trt", parts, build)
            if status == "hit":
                try:
                    module = torch_tensorrt.load(str(folder / ENGINE_FILE)).module()
                except Exception as e:  # readable but not loadable here: build it again
                    log.warning("cached TensorRT engine %s does not load (%s): rebuilding it",
                                folder, e)
                    shutil.rmtree(folder, ignore_errors=True)
                    folder, _ = self.ctx.cache.fetch("trt", parts, build)
                    status, module = "rebuilt", built["module"]
            else:
                module = built["module"]
            self.module = module
            self.infer(x)  # engine deserialised and execution context created here
            torch.cuda.synchronize(device)
        export_s = time.perf_counter() - t0
        info = {"engine_file": str(folder / ENGINE_FILE),
                "engine_mb": f"{(folder / ENGINE_FILE).stat().st_size / 2**20:.1f}",
                "trt_versions": f"torch_tensorrt {parts['torch_tensorrt']}, "
                                f"tensorrt {parts['tensorrt']}"}
        if self.ctx.channels_last:
            info["channels_last"] = "ignored: TensorRT chooses its own layouts"
        return Prepared(export_s=export_s, cache=status, info=info)

    def _prepare_file(self, model: OnnxModel, device: torch.device) -> Prepared:
        """The user's ONNX file built into an engine by TensorRT itself (tensorrt_onnx), cached
        by the file's content; a cached engine that does not load here is built again."""
        trt = tensorrt_onnx.import_tensorrt()
        ctx = self.ctx
        plan = tensorrt_onnx.build_plan(model, ctx.precision)
        profile = tensorrt_onnx.profile_shapes(model.input, ctx.batch, ctx.resolution)
        parts = tensorrt_onnx.engine_parts(self.cfg, ctx, plan,
                                           tensorrt_onnx.build_env(trt, device))
        engine = tensorrt_onnx.ENGINE_FILE

        def build(folder: Path) -> None:
            blob = tensorrt_onnx.build_engine(trt, model, plan, self.cfg, profile)
            (folder / engine).write_bytes(blob)

        t0 = time.perf_counter()
        with torch.cuda.device(device):
            folder, status = ctx.cache.fetch("trt-onnx", parts, build)
            shape = input_shape(ctx)

            def load() -> tensorrt_onnx.EngineRunner:
                return tensorrt_onnx.EngineRunner(trt, (folder / engine).read_bytes(), model.input,
                                                  model.output_name, shape, device)

            try:
                self.runner = load()
            except RuntimeError as e:
                if status != "hit":
                    raise
                log.warning("cached TensorRT engine %s does not load (%s): rebuilding it",
                            folder, e)
                shutil.rmtree(folder, ignore_errors=True)
                folder, _ = ctx.cache.fetch("trt-onnx", parts, build)
                status, self.runner = "rebuilt", load()
            self.module = self.runner.infer
            x = torch.zeros(shape, dtype=self.input_dtype, device=device)
            self.infer(x)  # the context's first run: lazy allocations happen here
            torch.cuda.synchronize(device)
        info = {"engine_file": str(folder / engine),
                "engine_mb": f"{(folder / engine).stat().st_size / 2**20:.1f}",
                "trt_versions": f"tensorrt {parts['tensorrt']} (its ONNX parser, no "
                                "Torch-TensorRT)",
                "trt_build": (f"strongly typed: the file's own types"
                              f"{', int8 from its Q/DQ nodes' if ctx.precision == 'int8' else ''}"
                              if plan["strongly_typed"]
                              else f"weakly typed, BuilderFlag.{plan['set'][0]}"),
                "trt_profile": "none: static shape" if profile is None else
                               "x".join(map(str, profile[1])) + " (min = opt = max)"}
        if self.ctx.channels_last:
            info["channels_last"] = "ignored: TensorRT chooses its own layouts"
        return Prepared(export_s=time.perf_counter() - t0, cache=status, info=info)

    def _compile(self, torch_tensorrt: Any, model: nn.Module, x: torch.Tensor,
                 device: torch.device) -> nn.Module:
        """Build the engine: cast (fp16/bf16) or quantise (int8) a copy of the model, then
        torch_tensorrt.compile it for inputs like `x`."""
        settings = compile_settings(self.cfg, self.ctx)
        inputs = [torch_tensorrt.Input(shape=input_shape(self.ctx), dtype=x.dtype)]
        model = copy.deepcopy(model).to(device, DTYPES[self.ctx.precision]).eval()
        with torch.no_grad():
            if self.ctx.precision != "int8":
                return torch_tensorrt.compile(model, inputs=inputs, **settings)
            from modelopt.torch.quantization.utils import export_torch_mode

            self._quantize(model, device)
            settings.pop("ir")  # as Torch-TensorRT's int8 example: export, then dynamo.compile
            with export_torch_mode():
                exported = torch.export.export(model, (x,), strict=False)
                return torch_tensorrt.dynamo.compile(exported, inputs=inputs, **settings)

    def _quantize(self, model: nn.Module, device: torch.device) -> None:
        """Insert int8 Q/DQ nodes with ModelOpt, calibrated on synthetic images."""
        mtq = import_modelopt_quantization()
        batches = calibration_images(self.ctx.resolution, self.cfg.calibration_batches)

        def calibrate(m: nn.Module) -> None:
            for batch in batches:
                m(batch.to(device))

        mtq.quantize(model, mtq.INT8_DEFAULT_CFG, forward_loop=calibrate)

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return _first(self.module(x))

    def close(self) -> None:
        self.module = self.runner = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
