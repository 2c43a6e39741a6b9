"""Build a torchvision or timm classification model, with the user's weights when given."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from sweep.config import ModelConfig, size_of
from sweep.errors import ConfigError, config_error


def classification_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def min_resolution(name: str) -> int:
    """Smallest input side the model's torchvision weights declare (1 when none is declared)."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name)
        return max(next(iter(weights)).meta.get("min_size", (1, 1)))
    except (ValueError, StopIteration, KeyError):
        return 1


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model in fp32, eval mode, on the CPU; random weights from `cfg.seed` unless given."""
    if cfg.kind == "timm":
        return build_timm(cfg)
    import torchvision

    check_name(cfg)
    torch.manual_seed(cfg.seed)
    model = torchvision.models.get_model(cfg.name, weights=None, num_classes=cfg.num_classes)
    if cfg.weights:
        load_weights(model, cfg)
    return model.eval()


def check_name(cfg: ModelConfig) -> None:
    """A ConfigError, with the close names, when torchvision (or timm, for model=timm) has no
    model `cfg.name`: a lookup in its registry, nothing built."""
    if cfg.kind == "timm":
        _timm(cfg)
        return
    names = classification_models()
    if cfg.name not in names and task_of_torchvision(cfg.name) is None:
        close = [n for n in names if cfg.name.lower()[:4] in n][:8] or names[:8]
        raise config_error(
            "model.name", cfg.name, "not a torchvision classification model",
            f"Close names: {', '.join(close)}. Use model=resnet18, model=resnet50 or "
            "model.name=<any of torchvision.models.list_models(module=torchvision.models)>.",
        )


def _timm(cfg: ModelConfig):
    """The timm package, once `cfg.name` is known to it; a ConfigError says what to do."""
    try:
        import timm
    except ImportError as e:
        raise ConfigError("model=timm needs the timm package: pip install "
                          "'inference-sweep[timm]' (or pip install timm)") from e
    if not timm.is_model(cfg.name):
        import difflib

        close = difflib.get_close_matches(cfg.name, timm.list_models(), n=8, cutoff=0.6)
        close = close or timm.list_models(f"*{cfg.name.lower()[:4]}*")[:8]
        raise config_error("model.name", cfg.name, "not a timm model",
                           f"Close names: {', '.join(close)}. Any of timm.list_models() works.")
    return timm


def build_timm(cfg: ModelConfig) -> nn.Module:
    """A timm model created with pretrained=False: nothing is downloaded."""
    timm = _timm(cfg)
    torch.manual_seed(cfg.seed)
    model = timm.create_model(cfg.name, pretrained=False, num_classes=cfg.num_classes)
    if cfg.weights:
        load_weights(model, cfg)
    return model.eval()


def _timm_cfg(cfg: ModelConfig, key: str):
    """A value of the timm model's default (pretrained) config; None when it has none."""
    timm = _timm(cfg)
    try:
        return timm.get_pretrained_cfg_value(cfg.name, key)
    except RuntimeError:  # a registered architecture without a pretrained config
        return None


TORCHVISION_RESOLUTION = 224  # what torchvision builds its classifiers for (weights=None)


def native_resolution(cfg: ModelConfig) -> tuple[int, str]:
    """The input side a model built by name is made for, and where that comes from: 224 for
    torchvision (its ViTs are built for 224 and take nothing else), a timm model's default
    config (`pretrained_cfg['input_size']`). The sweep's resolution is square, so a timm model
    whose default is not is a ConfigError that says what to set."""
    if cfg.kind != "timm":
        return TORCHVISION_RESOLUTION, f"torchvision builds {cfg.name} for 224"
    size = _timm_cfg(cfg, "input_size")
    if not size:
        return TORCHVISION_RESOLUTION, f"timm's {cfg.name} declares no input_size: 224"
    _, height, width = size
    if height != width:
        raise ConfigError(f"resolution=null (the model's own) does not fit timm's "
                          f"{cfg.name}: its default config is {height}x{width} (height x width) "
                          f"and the sweep's resolution is square. Set it: "
                          f"resolution={max(height, width)} (or another side the model takes).")
    return int(height), f"timm's default config of {cfg.name}: input_size {tuple(size)}"


def load_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """Load a state dict with weights_only=True; say clearly why a file does not fit."""
    path = Path(cfg.weights).expanduser()
    if not path.is_file():
        raise config_error("model.weights", cfg.weights, "no such file",
                           "Give the path of a .pth state dict, or model.weights=null for "
                           "random weights.")
    if path.stat().st_size == 0:
        raise config_error("model.weights", cfg.weights, "the file is empty (0 bytes)",
                           "Save the weights again: torch.save(model.state_dict(), path).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line]
        refused = refused or [f"it imports {g}" for g in _code_globals(path)[:1]]
        if not refused:
            raise ConfigError(f"model.weights={cfg.weights!r} is not a readable PyTorch file: "
                              f"{_first_line(e)}") from e
        raise ConfigError(
            f"model.weights={cfg.weights!r} was refused by torch.load(weights_only=True): it holds "
            f"Python objects that could run code when loaded ({refused[0]}). Save only the "
            "tensors: torch.save(model.state_dict(), path)."
        ) from e
    except Exception as e:  # truncated zip, not a torch file at all
        raise ConfigError(f"model.weights={cfg.weights!r} is not a readable PyTorch file: "
                          f"{_first_line(e)}") from e
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"model.weights={cfg.weights!r} holds a {type(state).__name__}, "
                          "not a state dict.")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    problems = _mismatch(model.state_dict(), state, cfg.num_classes)
    if problems:
        raise ConfigError(
            f"model.weights={cfg.weights!r} does not fit model.name={cfg.name} "
            f"(num_classes={cfg.num_classes}): {problems}"
        )
    model.load_state_dict(state)


def _first_line(e: BaseException) -> str:
    """An exception's first line of text, or its type when it has none (EOFError(''))."""
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


_SAFE_MODULES = ("torch", "collections", "_codecs", "numpy", "builtins")


def _code_globals(path: Path) -> list[str]:
    """The importable names a pickle (a bare one, or a torch zip's data.pkl) would call that
    are not tensor storage: what makes loading it run code."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                data = next((z.read(n) for n in z.namelist() if n.endswith("data.pkl")), b"")
        else:
            data = path.read_bytes()
        found, strings = [], []
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(arg)
            elif op.name == "GLOBAL":
                found.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # not a pickle we can walk: say only that it is unreadable
        return []
    return [g for g in found if g.split(".")[0] not in _SAFE_MODULES]


def _mismatch(expected: dict, given: dict, num_classes: int | None = None) -> str:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)} expected"
              for k, v in expected.items()
              if k in given and hasattr(given[k], "shape") and given[k].shape != v.shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        parts.append("shape mismatch: " + "; ".join(shapes[:3]))
        heads = ("fc.weight", "classifier.1.weight", "head.weight")
        head = [s for s in shapes if s.split()[0].endswith(heads)]
        if head and head[0].split("(")[1].split(",")[0] != str(num_classes):
            classes = head[0].split("(")[1].split(",")[0]
            parts.append(f"the checkpoint's classifier has {classes} classes: "
                         "set model.num_classes to match")
    return "; ".join(parts)


def check_resolution(cfg: ModelConfig, resolution: int | list[int]) -> None:
    """A resolution the model cannot take is a clear error before anything is built (files:
    checked against their declared input; other timm models: at the FLOP count)."""
    if cfg.kind == "timm":
        if _timm_cfg(cfg, "fixed_input_size"):
            side, _ = native_resolution(cfg)
            if resolution != side:
                raise config_error("resolution", resolution,
                                   f"timm's {cfg.name} takes only its default input size "
                                   f"{side}x{side} (fixed_input_size in its config)",
                                   f"Use resolution={side}, or resolution=null for the "
                                   "model's own.")
        return
    if cfg.kind != "torchvision":
        return
    need = min_resolution(cfg.name)
    if min(size_of(resolution)) < need:
        raise config_error("resolution", resolution, f"{cfg.name} needs at least {need}",
                           f"e.g. resolution={max(need, 224)}")


# Detectors and segmenters by name (issue 33): built offline, with the task each implies.
TASK_DEFAULT_CLASSES = {"detect": 91, "segment": 21}  # COCO with background; VOC


def task_of_torchvision(name: str) -> str | None:
    """The task a torchvision architecture implies: classify, detect or segment (None: not a
    torchvision image model)."""
    import torchvision
    from torchvision.models import detection, segmentation

    for task, module in (("detect", detection), ("segment", segmentation)):
        if name in torchvision.models.list_models(module=module):
            return task
    return "classify" if name in classification_models() else None


def build_task_model(name: str, *, seed: int = 0, num_classes: int | None = None,
                     weights: str | None = None, resolution: tuple[int, int] | None = None,
                     score_thresh: float | None = None) -> nn.Module:
    """A torchvision detector or segmenter in fp32, eval mode, on the CPU, with nothing
    downloaded (weights=None, weights_backbone=None); the user's state dict when `weights` is
    given. Detectors: `resolution` [height, width] sets the internal resize of the R-CNN family,
    RetinaNet and FCOS to the input's own size (SSD resizes to its fixed size), and
    `score_thresh` the model's own score threshold (lowered for a check on random weights)."""
    import torchvision

    task = task_of_torchvision(name)
    if task not in TASK_DEFAULT_CLASSES:
        raise config_error("model.name", name, "not a torchvision detection or segmentation "
                           "model", "e.g. model.name=ssdlite320_mobilenet_v3_large, "
                           "fasterrcnn_mobilenet_v3_large_fpn or deeplabv3_mobilenet_v3_large")
    kwargs: dict = {"weights": None, "weights_backbone": None,
                    "num_classes": num_classes or TASK_DEFAULT_CLASSES[task]}
    if task == "detect" and resolution is not None and not name.startswith("ssd"):
        kwargs.update(min_size=min(resolution), max_size=max(resolution))
    if task == "detect" and score_thresh is not None:
        key = "box_score_thresh" if "rcnn" in name else "score_thresh"
        kwargs[key] = score_thresh
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, **kwargs)
    if weights:
        load_weights(model, ModelConfig(name=name, weights=weights,
                                        num_classes=kwargs["num_classes"]))
    return model.eval()


def class_logit_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of a torchvision detector or segmenter that give its class logits."""
    heads = getattr(model, "head", None)
    if hasattr(model, "roi_heads"):  # Faster/Mask/Keypoint R-CNN
        return [model.roi_heads.box_predictor.cls_score]
    if heads is not None and hasattr(heads.classification_head, "cls_logits"):  # RetinaNet, FCOS
        return [heads.classification_head.cls_logits]
    if heads is not None:  # SSD, SSDlite: one conv per feature map, the last of each block
        return [[m for m in block.modules() if isinstance(m, nn.Conv2d)][-1]
                for block in heads.classification_head.module_list]
    if hasattr(model.classifier, "low_classifier"):  # LR-ASPP sums two
        return [model.classifier.low_classifier, model.classifier.high_classifier]
    return [[m for m in model.classifier.modules() if isinstance(m, nn.Conv2d)][-1]]


@torch.no_grad()
def make_task_decisive(model: nn.Module, calib: torch.Tensor, spread: float = 2.0) -> None:
    """Random weights give a detector or segmenter nearly equal class scores everywhere (every
    box scores about 1/classes), so a check would compare ties. Rescale each class-logit layer
    so its logits, centred per class over `calib` (inputs like the job's), spread with std
    `spread` each: the winning class then depends on the input. Never for a user's weights; shapes
    and FLOPs do not change."""
    _recalibrate_norms(model, calib)
    layers = class_logit_layers(model)
    seen: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, _a, out, i=i: seen.setdefault(i, out))
             for i, m in enumerate(layers)]
    try:
        model.eval()(calib)
    finally:
        for h in hooks:
            h.remove()
    for i, layer in enumerate(layers):
        out = seen[i].double().transpose(0, 1).flatten(1)  # (classes, everything else)
        mu = out.mean(1)
        k = spread / out.std(1).clamp_min(1e-12)  # per class: no class wins by its scale alone
        layer.weight.mul_(k.view(-1, *[1] * (layer.weight.dim() - 1)).to(layer.weight.dtype))
        bias = layer.bias if layer.bias is not None else None
        if bias is not None:
            bias.copy_(((bias.double() - mu) * k).to(bias.dtype))


@torch.no_grad()
def _recalibrate_norms(model: nn.Module, calib: torch.Tensor) -> None:
    """Batch-norm running statistics re-estimated on `calib` (the rest of the model in eval)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration pass
        m.train()
    try:
        model(calib)
    finally:
        for m in norms:
            m.eval()
