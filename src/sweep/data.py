"""Labelled image folders (`data=imagefolder`): check one, scan one.

A folder holds one sub-folder per class; the class index is the position of the folder's name in
the sorted list of names (as torchvision's ImageFolder does), so an empty class folder keeps its
index. Image files are found by suffix (`IMAGE_SUFFIXES`, any case, in nested folders too);
hidden files and folders are skipped. `sweep.demo_data` writes such folders.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sweep.errors import ConfigError, config_error

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

_ROOT_HINT = ("Give a folder with one sub-folder per class, e.g. "
              "`python -m sweep.demo_data generate data/demo` then data.root=data/demo.")


@dataclass
class ImageSet:
    """The files of an image folder that a job uses, with their labels."""

    root: Path
    classes: list[str]  # index = label
    items: list[tuple[Path, int]]  # interleaved over the classes
    found: int  # image files found before `max_images`
    empty_classes: list[str] = field(default_factory=list)
    ignored: int = 0  # files that are not images by suffix, or outside any class folder

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _visible(path: Path, base: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(base).parts)


def _class_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and _visible(path, folder):
            yield path


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def check_root(root: str | None) -> Path:
    """Fail with a ConfigError naming data.root unless it is a folder of class folders holding
    at least one image file; cheap (stops at the first image)."""
    if not root:
        raise ConfigError(f"data.root is not set: data=imagefolder reads image files from it. "
                          f"{_ROOT_HINT}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise config_error("data.root", root, "no such folder", _ROOT_HINT)
    classes = _class_dirs(path)
    if not classes:
        raise config_error("data.root", root, "it has no class folders", _ROOT_HINT)
    if not any(_is_image(f) for c in classes for f in _files(c)):
        raise config_error("data.root", root,
                           f"its {len(classes)} class folders hold no image files "
                           f"({', '.join(IMAGE_SUFFIXES)})", _ROOT_HINT)
    return path


def scan(root: str | None, max_images: int) -> ImageSet:
    """The labelled files under `root`, at most `max_images`, taken in turn from each class so
    that every class is represented and batches mix classes."""
    path = check_root(root)
    classes = _class_dirs(path)
    per_class: list[list[Path]] = []
    ignored = sum(1 for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    for folder in classes:
        files = list(_files(folder))
        images = [f for f in files if _is_image(f)]
        ignored += len(files) - len(images)
        per_class.append(images)
    items: list[tuple[Path, int]] = []
    for i in range(max(len(f) for f in per_class)):
        items.extend((files[i], label) for label, files in enumerate(per_class) if i < len(files))
    empty = [c.name for c, files in zip(classes, per_class, strict=True) if not files]
    return ImageSet(root=path, classes=[c.name for c in classes], items=items[:max_images],
                    found=len(items), ignored=ignored, empty_classes=empty)


if __name__ == "__main__":  # `python -m sweep.data generate ...` was once documented here
    import sys

    sys.exit("sweep.data only reads image folders; the demo set is written by "
             "`python -m sweep.demo_data generate data/demo --classes 4 --per-class 8` "
             "(python -m sweep.demo_data --help)")
