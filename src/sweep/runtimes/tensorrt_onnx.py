"""runtime=trt on the user's ONNX file (model=onnx): TensorRT's own ONNX parser, no Torch-TensorRT.

NOT RUN in this project's environment: TensorRT cannot be installed where this was written, so
only the parts before the first TensorRT call are tested (the precision rules, the optimisation
profile, the cache key, the error that names what to install). It is written against the public
Python API of TensorRT 10: ``trt.Builder``, ``Builder.create_network`` (explicit batch is the only
mode), ``trt.OnnxParser.parse_from_file``, ``IBuilderConfig`` (workspace pool limit,
``builder_optimization_level``, flags, one optimisation profile for a file with dynamic axes),
``Builder.build_serialized_network``, ``trt.Runtime.deserialize_cuda_engine`` and
``IExecutionContext.set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3`` on torch's
current stream.

Precisions: with precision=fp32 the file runs in its own types (an fp16 file stays fp16) in a
strongly typed network, TF32 off; tf32 turns TF32 on. int8 is a file with Q/DQ nodes (explicit
quantisation, built strongly typed as well); TensorRT 10 deprecates calibrating a plain file and
11 removes it, so a file without them is refused with how to quantise it. fp16 and bf16 let the
builder pick half kernels for an fp32 file (``BuilderFlag.FP16`` / ``BF16``, weak typing:
deprecated in TensorRT 10.12 and gone in 11, where the job says to convert the file instead).
Input and output keep the file's types throughout. The engine is cached by the file's content,
the shape, the precision, the builder options, TensorRT's version and the GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from sweep.config import TrtRuntimeConfig
from sweep.model_files import InputSpec, OnnxModel
from sweep.runtimes.base import JobContext, UnsupportedError

log = logging.getLogger(__name__)

INSTALL = ("pip install tensorrt (NVIDIA's wheels bring the ONNX parser; add --extra-index-url "
           "https://pypi.nvidia.com where pip does not find them)")
ENGINE_FILE = "model.engine"
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
HALF_FLAGS = {"fp16": "FP16", "bf16": "BF16"}
QUANTISE_HINT = ("quantise it to Q/DQ form first (NVIDIA ModelOpt: python -m "
                 "modelopt.onnx.quantization --onnx_path=<file> --quantize_mode=int8; or ONNX "
                 "Runtime's quantize_static with QuantFormat.QDQ and symmetric activations), or "
                 "use runtime=onnx runtime.provider=tensorrt precision=int8, which quantises it")
TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16,
                "INT32": torch.int32, "INT64": torch.int64, "INT8": torch.int8,
                "BOOL": torch.bool, "UINT8": torch.uint8}


def missing_tensorrt_error(cause: BaseException) -> UnsupportedError:
    return UnsupportedError(
        f"TensorRT is not installed: {INSTALL}. runtime=trt builds model=onnx files with "
        f"TensorRT's own ONNX parser, and the tensorrt package cannot be imported here "
        f"({type(cause).__name__}: {cause}).")


def import_tensorrt() -> Any:
    """`tensorrt`, or an UnsupportedError that says what to install."""
    try:
        import tensorrt
    except Exception as e:  # not installed, or built for another CUDA
        raise missing_tensorrt_error(e) from e
    return tensorrt


def has_qdq(path: Path) -> bool:
    """Whether the file holds Q/DQ nodes (explicit quantisation), read without its weights."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return any(node.op_type in QDQ_OPS for node in proto.graph.node)


def build_plan(model: OnnxModel, precision: str) -> dict[str, Any]:
    """How the engine is built for `precision`: a strongly typed network or not, and the builder
    flags to set and clear. Pure (reads only the file), so it is tested without TensorRT."""
    if precision in HALF_FLAGS:
        if model.input.dtype != "float32":
            raise UnsupportedError(
                f"runtime=trt precision={precision} lets TensorRT choose half kernels for an fp32 "
                f"file, and model.path={model.label} takes {model.input.dtype} input already: "
                "use precision=fp32 to run the file in its own types.")
        return {"strongly_typed": False, "set": [HALF_FLAGS[precision]], "clear": []}
    if precision == "int8":
        if not has_qdq(model.path):
            raise UnsupportedError(
                f"runtime=trt precision=int8 builds a file that carries its own quantisation "
                f"(Q/DQ nodes), and model.path={model.label} has none: {QUANTISE_HINT}.")
        return {"strongly_typed": True, "set": [], "clear": ["TF32"]}
    # fp32 | tf32: the file's own types, TF32 as the precision says (TensorRT's default is on)
    return {"strongly_typed": True, "set": ["TF32"] if precision == "tf32" else [],
            "clear": [] if precision == "tf32" else ["TF32"]}


def profile_shapes(spec: InputSpec, batch: int,
                   resolution: int) -> tuple[tuple[int, ...], ...] | None:
    """(min, opt, max) of the one optimisation profile a file with a dynamic axis needs: the
    job's shape for all three, since a job runs one shape; None when every axis is static."""
    if None not in (spec.batch, spec.height, spec.width):
        return None
    shape = (batch, spec.channels, resolution, resolution)
    return shape, shape, shape


def engine_parts(cfg: TrtRuntimeConfig, ctx: JobContext, plan: dict[str, Any],
                 env: dict[str, str]) -> dict[str, object]:
    """What names the engine in the artifact cache: the file's content (ctx.model_identity), the
    shape, precision and build plan, the builder options, TensorRT's version and the GPU (`env`)."""
    return {**ctx.model_identity, "runtime": "trt-onnx",
            "shape": [ctx.batch, 3, *ctx.size],
            "input_dtype": str(ctx.input_dtype), "precision": ctx.precision,
            "plan": {k: plan[k] for k in sorted(plan)},
            "workspace_gb": cfg.workspace_gb, "optimization_level": cfg.optimization_level,
            **env}


def build_env(trt: Any, device: torch.device) -> dict[str, str]:
    major, minor = torch.cuda.get_device_capability(device)
    return {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(device),
            "compute_capability": f"{major}.{minor}"}


def build_engine(trt: Any, model: OnnxModel, plan: dict[str, Any], cfg: TrtRuntimeConfig,
                 profile: tuple[tuple[int, ...], ...] | None) -> bytes:
    """Parse the file and build a serialized engine (the plan) by `plan`."""
    missing = [f for f in plan["set"] if not hasattr(trt.BuilderFlag, f)]
    if missing:  # TensorRT 11 builds only strongly typed networks
        raise UnsupportedError(
            f"TensorRT {trt.__version__} has no BuilderFlag.{missing[0]}: it builds only strongly "
            f"typed networks, so a half engine needs a half file. Convert model.path="
            f"{model.label} (e.g. NVIDIA ModelOpt's AutoCast: python -m modelopt.onnx.autocast "
            "--onnx_path=<file>) and run it with precision=fp32.")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) \
        if plan["strongly_typed"] else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model.path)):  # by path: external data beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UnsupportedError(f"TensorRT's ONNX parser cannot build model.path={model.label}: "
                               f"{errors or 'no reason given'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gb * (1 << 30)))
    config.builder_optimization_level = cfg.optimization_level
    for flag in plan["set"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan["clear"]:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    if profile is not None:
        p = builder.create_optimization_profile()
        p.set_shape(model.input.name, *profile)
        config.add_optimization_profile(p)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from model.path={model.label} "
                           "(its log above says why)")
    return bytes(serialized)


class EngineRunner:
    """A deserialized engine with one execution context, its output buffers allocated once for
    the job's input shape. `infer` returns the first output's buffer, which the next call
    overwrites (callers copy it, as accuracy.run_batches does)."""

    def __init__(self, trt: Any, blob: bytes, spec: InputSpec, output_name: str,
                 shape: tuple[int, ...], device: torch.device) -> None:
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise RuntimeError("the cached TensorRT engine does not deserialize here")
        self.context = self.engine.create_execution_context()
        self.input_name = spec.name
        self.context.set_input_shape(spec.name, shape)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.buffers = {}
        for name in outputs:  # every output needs an address, even those the job ignores
            dtype = TORCH_DTYPES[self.engine.get_tensor_dtype(name).name]
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype,
                              device=device)
            self.context.set_tensor_address(name, out.data_ptr())
            self.buffers[name] = out
        self.output = self.buffers[output_name]  # the logits the file declares first

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(x.device).cuda_stream):
            raise RuntimeError("TensorRT's execute_async_v3 failed (its log above says why)")
        return self.output
