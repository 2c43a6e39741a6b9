"""Content-addressed artifact cache: exported ONNX models, quantised models, TensorRT engines.

An entry is a folder named by the hash of everything that determines its content (architecture,
weights hash, input shape, precision, runtime and its version, opset...). Entries are built in a
temporary folder and renamed into place, and a manifest records each file's SHA-256, so a
half-written or corrupted entry is detected and rebuilt instead of trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sweep.config import ModelConfig
from sweep.errors import config_error
from sweep.paths import cache_dir
from sweep.trust import untrusted

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def state_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{t.numel()};".encode())
        h.update(t.view(torch.uint8).numpy().data)
    return h.hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ArtifactCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, configured: str | None = None) -> ArtifactCache:
        try:
            root = cache_dir(configured)
        except (FileExistsError, NotADirectoryError) as e:  # a file where a folder must be
            raise config_error("cache_dir", configured or e.filename,
                               f"{e.filename} is a file, not a folder",
                               "Give a folder (cache_dir=<folder> or SWEEP_CACHE_DIR), or move "
                               "the file away.") from e
        # its entries (compiled graphs, engines) are loaded as code: only its owner may write it
        if why := untrusted(root):
            raise config_error("cache_dir", str(root),
                               f"a folder only you can write, but {why}",
                               f"Run chmod -R go-w {root} (and chown it to yourself), or give "
                               "a private folder: cache_dir=<folder> or SWEEP_CACHE_DIR=<folder>.")
        return cls(root)

    @staticmethod
    def model_identity(cfg: ModelConfig, model: nn.Module) -> dict[str, str]:
        """Architecture and a digest of the weights and buffers as they are now: the job re-fits
        a random model's classifier (accuracy.make_decisive) from inputs that depend on the
        resolution and data.seed, so the config alone does not name the weights."""
        return {"arch": cfg.name, "num_classes": str(cfg.num_classes), "state": state_digest(model)}

    @staticmethod
    def key(parts: dict[str, object]) -> str:
        blob = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def fetch(self, kind: str, parts: dict[str, object],
              build: Callable[[Path], None]) -> tuple[Path, str]:
        """The folder of a valid entry for `parts`, building it with `build(folder)` if needed.

        Returns the folder and `hit`, `miss` or `rebuilt` (an entry was there but corrupt).
        """
        final = self.root / kind / self.key(parts)
        status = "miss"
        if final.exists():
            if self._valid(final):
                return final, "hit"
            log.warning("cache entry %s is corrupt or incomplete: rebuilding it", final)
            shutil.rmtree(final, ignore_errors=True)
            status = "rebuilt"
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            build(tmp)
            files = {p.relative_to(tmp).as_posix(): _sha256(p)
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            (tmp / MANIFEST).write_text(json.dumps({"parts": parts, "files": files},
                                                   indent=2, default=str))
            try:
                os.replace(tmp, final)
            except OSError:  # another process finished the same entry first: use theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final, status

    @staticmethod
    def _valid(entry: Path) -> bool:
        try:
            manifest = json.loads((entry / MANIFEST).read_text())
            return bool(manifest["files"]) and all(
                (entry / name).is_file() and _sha256(entry / name) == digest
                for name, digest in manifest["files"].items()
            )
        except (OSError, ValueError, KeyError):
            return False
