"""The user's model files: an ONNX model, benchmarked as it is, and a `torch.export` program.

Nothing of a file runs to inspect it: an ONNX file is a protobuf read by `onnx` (its input, its
output, FLOPs from shape inference), a .pt2 goes through `torch.export.load` (no pickles). What
the tool feeds is a batch of 3-channel NCHW images in fp32 or fp16; an input it cannot feed is
refused with the reason.

FLOPs of an ONNX graph (2 per multiply-add) count the nodes that hold nearly all the arithmetic
of a classifier: Conv, ConvTranspose, MatMul and Gemm, and their integer forms (ConvInteger,
QLinearConv, MatMulInteger, QLinearMatMul). Element-wise ops, pooling, normalisation, softmax and
nodes inside control-flow subgraphs are not counted, nor is a node whose shapes shape inference
could not resolve (their number is reported).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sweep.config import ModelConfig
from sweep.errors import ConfigError, config_error

log = logging.getLogger(__name__)

FEEDABLE = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class InputSpec:
    """The one input of a model file, as the file declares it (None: a dynamic dimension)."""

    name: str
    batch: int | None
    channels: int
    height: int | None
    width: int | None
    dtype: str  # float32 | float16

    @property
    def torch_dtype(self) -> torch.dtype:
        return FEEDABLE[self.dtype]

    def describe(self) -> str:
        dims = [d if d is not None else "?" for d in (self.batch, self.channels, self.height,
                                                     self.width)]
        return f"{self.name}: NCHW {'x'.join(map(str, dims))} {self.dtype}"

    def native_resolution(self, path: str) -> tuple[int | list[int], str]:
        """The side (or [height, width] when they differ) the file declares (`resolution:
        null`), and where it comes from; 224 for a file whose height and width are both
        dynamic."""
        if self.height and self.width and self.height != self.width:
            return [self.height, self.width], (f"the static input of model.path={path}: "
                                               f"{self.describe()}")
        side = self.height or self.width
        if side:
            return side, f"the static input of model.path={path}: {self.describe()}"
        return 224, (f"model.path={path} takes any size ({self.describe()}): 224; set "
                     "resolution=N to choose")

    def check_job(self, path: str, batch: int, resolution: int | list[int]) -> None:
        """A static dimension of the file that the job's `batch` or `resolution` contradicts is
        a clear error naming both."""
        if self.batch is not None and self.batch != batch:
            raise config_error("batch", batch,
                               f"model.path={path} has a static batch of {self.batch}",
                               f"Use batch={self.batch}, or export the model with a dynamic "
                               "batch axis to sweep batch sizes.")
        from sweep.config import size_of

        wanted = size_of(resolution)
        for i, (side, value) in enumerate((("height", self.height), ("width", self.width))):
            if value is not None and value != wanted[i]:
                fix = (f"resolution={value}" if self.height == self.width else
                       f"resolution=[{self.height or wanted[0]},{self.width or wanted[1]}]")
                raise config_error("resolution", resolution,
                                   f"model.path={path} takes a static {side} of {value} "
                                   f"({self.describe()})", f"Use {fix}.")


def _file(cfg: ModelConfig, what: str) -> Path:
    path = Path(str(cfg.path)).expanduser()
    if not path.is_file():
        raise config_error("model.path", cfg.path, "no such file", f"Give the path of {what}.")
    if path.stat().st_size == 0:
        raise config_error("model.path", cfg.path, "the file is empty", f"Give {what}.")
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _spec(key: str, name: str, shape: list, dtype: str, what: str) -> InputSpec:
    """Check that the tool can feed an input of `shape` (ints, None for dynamic) and `dtype`."""
    if dtype not in FEEDABLE:
        raise ConfigError(f"{key}: {what} input {name!r} is {dtype}; this tool feeds images in "
                          f"{' or '.join(FEEDABLE)}. Export the model with a float image input.")
    if len(shape) != 4:
        raise ConfigError(f"{key}: {what} input {name!r} has shape {shape}; this tool feeds "
                          "image batches of rank 4 (N, C, H, W).")
    if shape[1] != 3:
        layout = " (it looks NHWC: export with NCHW input)" if shape[3] == 3 else ""
        raise ConfigError(f"{key}: {what} input {name!r} has shape {shape}: {shape[1]} channels "
                          f"on axis 1{layout}; this tool feeds 3-channel NCHW images.")
    return InputSpec(name, shape[0], 3, shape[2], shape[3], dtype)


# --- ONNX ------------------------------------------------------------------------------------


@dataclass
class OnnxModel:
    """A user's ONNX file and what was read from it; the runtimes that can run it load `path`."""

    path: Path
    input: InputSpec
    output_name: str
    sha256: str
    opset: int
    label: str  # model.path as the user gave it
    output_names: tuple[str, ...] = ()
    output_shapes: tuple[tuple[int | None, ...], ...] = ()  # None: a dynamic axis

    def identity(self, name: str) -> dict[str, str]:
        """What names this model in the artifact cache: the file's content."""
        return {"arch": name, "file": self.sha256}

    def info(self) -> dict[str, str]:
        return {"model_file": str(self.path), "model_file_sha256": self.sha256,
                "model_input": self.input.describe(), "model_opset": str(self.opset)}

    def reference(self, inputs: torch.Tensor, batch: int) -> torch.Tensor:
        """Logits of ONNX Runtime's CPU provider on this same file (fp32 compute wherever its
        kernels do not take the file's own types), default options: the correctness reference."""
        import onnxruntime as ort

        session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        dtype = self.input.torch_dtype
        outs = [torch.from_numpy(session.run([self.output_name],
                                             {self.input.name: x.to(dtype).numpy()})[0]).float()
                for x in inputs.split(batch)]
        return torch.cat(outs)

    def run_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every output of ONNX Runtime's CPU provider on this file for one batch `x` (the
        reference of a task other than classify)."""
        import onnxruntime as ort

        session = self.__dict__.get("_session")
        if session is None:
            session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            self.__dict__["_session"] = session
        outs = session.run(None, {self.input.name: x.to(self.input.torch_dtype).numpy()})
        return [torch.from_numpy(o) for o in outs]


def open_onnx(cfg: ModelConfig) -> OnnxModel:
    """Read and check the file of model=onnx; a ConfigError says why it cannot be benchmarked."""
    import onnx

    what = "an ONNX model file (.onnx)"
    path = _file(cfg, what)
    key = f"model.path={cfg.path!r}"
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # DecodeError for a truncated or foreign file
        raise ConfigError(f"{key} is not a readable ONNX model (truncated, or not ONNX): "
                          f"{type(e).__name__}: {e}") from e
    if not proto.graph.node or proto.ir_version <= 0:
        raise ConfigError(f"{key} is not an ONNX model: it parses to an empty graph "
                          "(truncated, or another kind of file).")
    try:
        onnx.checker.check_model(str(path))  # by path: external data and files over 2 GB
    except Exception as e:
        raise ConfigError(f"{key} fails onnx.checker ({type(e).__name__}): "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from e
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ConfigError(f"{key} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)})"
                          "; this tool feeds one image batch.")
    spec = _spec(key, inputs[0].name, _dims(inputs[0]), _elem(inputs[0]), "its")
    out = proto.graph.output[0]
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxModel(path=path, input=spec, output_name=out.name, sha256=sha256_file(path),
                     opset=opset, label=str(cfg.path),
                     output_names=tuple(o.name for o in proto.graph.output),
                     output_shapes=_output_shapes(proto))


def _output_shapes(proto: Any) -> tuple[tuple[int | None, ...], ...]:
    """The outputs' shapes as the file declares them, their axes after the first completed by
    ONNX shape inference at batch 1 where the exporter left them dynamic (what the task is
    inferred from: a YOLO head's anchors)."""
    import onnx

    declared = [tuple(_dims(o)) for o in proto.graph.output]
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    for inp in probe.graph.input:  # a dynamic batch hides what follows from it
        dims = inp.type.tensor_type.shape.dim
        if len(dims) == 4 and not dims[0].dim_value:
            dims[0].Clear()
            dims[0].dim_value = 1
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True).graph.output
    except Exception:  # an op it does not know: the declared shapes are all there is
        return tuple(declared)
    out = []
    for d, o in zip(declared, inferred, strict=True):
        i = _dims(o)
        out.append(d if len(i) != len(d) else
                   (d[0], *(a if a is not None else b for a, b in zip(d[1:], i[1:], strict=True)))
                   if d else d)
    return tuple(out)


def count_onnx_gflop(model: OnnxModel, resolution: int) -> tuple[float, int]:
    """GFLOP per image of the file at `resolution` (module docstring: what is counted), and the
    number of countable nodes whose shapes stayed unresolved."""
    import onnx

    proto = onnx.load(str(model.path), load_external_data=False)
    from sweep.config import size_of

    batch = model.input.batch or 1
    for inp in proto.graph.input:
        if inp.name == model.input.name:
            for d, v in zip(inp.type.tensor_type.shape.dim,
                            (batch, 3, *size_of(resolution)), strict=True):
                d.Clear()
                d.dim_value = v
    try:
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as e:  # an op shape inference does not know: count what it resolved
        log.warning("ONNX shape inference failed (%s); FLOPs count only resolved nodes", e)
    shapes: dict[str, list[int | None]] = {t.name: list(t.dims) for t in proto.graph.initializer}
    for vi in (*proto.graph.input, *proto.graph.value_info, *proto.graph.output):
        shapes[vi.name] = _dims(vi)
    flops, unresolved = 0.0, 0
    for node in proto.graph.node:
        n = _node_flops(node, shapes)
        if n is None:
            unresolved += 1
        else:
            flops += n
    return flops / batch / 1e9, unresolved


_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
_B_INPUT = {"MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3, "Gemm": 1}


def _node_flops(node: Any, shapes: dict[str, list[int | None]]) -> float | None:
    """2 x multiply-adds of one node; 0 for a node not counted; None when its shapes are
    unknown."""
    op = node.op_type
    if op not in _WEIGHT_INPUT and op not in _B_INPUT:
        return 0.0
    out = shapes.get(node.output[0])
    if op in _WEIGHT_INPUT:
        w = shapes.get(node.input[_WEIGHT_INPUT[op]])
        if op == "ConvTranspose":  # each input element meets a (M/group) x kernel slice
            x = shapes.get(node.input[0])
            if not _known(x) or not _known(w):
                return None
            return 2.0 * math.prod(x) * math.prod(w[1:])
        if not _known(out) or not _known(w):
            return None
        return 2.0 * math.prod(out) * math.prod(w[1:])  # w: M x C/group x kH x kW
    a = shapes.get(node.input[0])
    if not _known(out) or not _known(a):
        return None
    k = a[-1]
    if op == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute):
        k = a[0]
    return 2.0 * math.prod(out) * k


def _known(shape: list | None) -> bool:
    return shape is not None and len(shape) > 0 and all(isinstance(d, int) and d > 0
                                                         for d in shape)


def _dims(value_info: Any) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value_info.type.tensor_type.shape.dim]


def _elem(value_info: Any) -> str:
    import onnx

    elem = value_info.type.tensor_type.elem_type
    return onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "undefined"


# --- torch.export ----------------------------------------------------------------------------


def load_exported(cfg: ModelConfig) -> tuple[nn.Module, InputSpec, dict[str, str]]:
    """The module of a torch.export program (.pt2), the input it declares and facts for the
    job's info; a ConfigError says why a file cannot be used."""
    import zipfile

    what = "a torch.export program saved with torch.export.save (.pt2)"
    path = _file(cfg, what)
    key = f"model.path={cfg.path!r}"
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{key} is not a torch.export program: a .pt2 is a zip archive and "
                          "this file is not one (truncated, or another kind of file).")
    _refuse_unsafe_pickles(path, key)
    try:
        ep = torch.export.load(str(path))
    except Exception as e:
        raise ConfigError(f"{key} could not be loaded by torch.export.load (truncated, not a "
                          f"torch.export program, or from an incompatible torch): "
                          f"{type(e).__name__}: {str(e)[:300]}") from e
    user = [s for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if len(user) != 1:
        raise ConfigError(f"{key} takes {len(user)} inputs; this tool feeds one image batch.")
    node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == user[0].arg.name)
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        raise ConfigError(f"{key}: its input {node.name!r} is not a tensor.")
    shape = [d if isinstance(d, int) else None for d in val.shape]
    dtype = str(val.dtype).removeprefix("torch.")
    spec = _spec(key, node.name, shape, dtype, "its")
    info = {"model_file": str(path), "model_file_sha256": sha256_file(path),
            "model_input": spec.describe()}
    return ep.module(), spec, info


def _pickled_members(archive: Any) -> list[str]:
    """The members of a .pt2 archive that torch.export.load unpickles: weights and constants its
    payload configs mark `use_pickle` (loaded with weights_only=False), and any other member
    holding a pickle or a torch.save archive (sample inputs: retried unsafely after a failed safe
    load). Raw tensor payloads are not sniffed: their bytes are data."""
    import json
    import posixpath

    raw: set[str] = set()
    pickled: list[str] = []
    for name in archive.namelist():
        if not name.endswith("_config.json"):
            continue
        try:
            config = json.loads(archive.read(name)).get("config", {})
        except (ValueError, AttributeError):
            continue  # not a payload config: torch.export.load will say what is wrong
        for meta in config.values() if isinstance(config, dict) else ():
            if not isinstance(meta, dict) or "path_name" not in meta:
                continue
            member = posixpath.join(posixpath.dirname(name), str(meta["path_name"]))
            (pickled.append if meta.get("use_pickle") else raw.add)(member)
    for name in archive.namelist():
        if name in raw or name in pickled or name.endswith(".json"):
            continue
        with archive.open(name) as f:
            head = f.read(4)
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save zip, pickle
            pickled.append(name)
    return pickled


def _refuse_unsafe_pickles(path: Path, key: str) -> None:
    """Before anything in the archive is deserialised: every pickled member must load with
    torch's safe unpickler (weights_only=True, tensors and plain containers only); one that
    needs more could run code when loaded, and the file is refused."""
    import io
    import zipfile

    with zipfile.ZipFile(path) as archive:
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in archive.namelist()):
            raise ConfigError(f"{key} is a torch.save file (a pickle), not a torch.export "
                              "program that torch.export.load reads; this tool unpickles no "
                              "such file. Save the model with torch.export.save (.pt2), or "
                              "give an ONNX file (model=onnx).")
        for name in _pickled_members(archive):
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True, map_location="cpu")
            except Exception as e:
                raise ConfigError(
                    f"{key} is refused: its member {name!r} is pickled data that torch's safe "
                    "loader (weights_only=True) will not load, so loading it could run code. "
                    "This tool loads no such pickle; re-export the model with torch.export.save "
                    f"from plain tensors, or give an ONNX file (model=onnx). ({type(e).__name__}"
                    f" from torch's safe loader)") from e
