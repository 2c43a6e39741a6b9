"""The tasks by name, and which task a model file's outputs imply."""

from __future__ import annotations

from collections.abc import Sequence

from sweep.tasks.base import Shape, Task, known, shape_text
from sweep.tasks.classify import Classify
from sweep.tasks.detect import OUTPUT_FORMATS, Detect
from sweep.tasks.raw import Raw
from sweep.tasks.segment import Segment

TASKS: dict[str, type[Task]] = {t.name: t for t in (Classify, Detect, Segment, Raw)}


def get_task(name: str, **options) -> Task:
    """A task by `model.task` name, with its options (e.g. detect: output_format, conf, iou,
    max_det)."""
    if name not in TASKS:
        raise ValueError(f"model.task={name!r} is not a task; use one of {'|'.join(TASKS)}")
    return TASKS[name](**options)


def infer_task(output_shapes: Sequence[Shape], output_format: str | None = None,
               task: str | None = None) -> tuple[str, str]:
    """The task that reads a file's outputs, and how that was decided (for `info.task_from`).
    A named `task` or `output_format` the outputs do not fit is a ValueError naming the
    outputs' shapes and what the task expects."""
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        raise ValueError(f"model.output_format={output_format!r} is not known; use one of "
                         f"{', '.join(OUTPUT_FORMATS)} (or null: the task reads the outputs)")
    shapes = [tuple(s) for s in output_shapes]
    got = ", ".join(shape_text(s) for s in shapes) or "none"
    if task is None and output_format is not None:
        task = "detect"  # only detectors' outputs need a format
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"model.task={task!r} is not a task; use one of {'|'.join(TASKS)}")
        problem = TASKS[task].cannot_read(shapes, output_format)
        if problem:
            raise ValueError(f"model.task={task} cannot read this model: {problem}")
        named = f"model.output_format={output_format}" if output_format else f"model.task={task}"
        return task, f"{named}: outputs {got}"
    if len(shapes) == 1 and len(shapes[0]) == 2:
        return "classify", f"one output (batch, classes) {got}"
    if shapes and len(shapes[0]) == 4:
        return "segment", f"first output (batch, classes, H, W) {got}"
    return "raw", f"outputs {got} match no task: compared numerically{_hint(shapes)}"


def _hint(shapes: list[tuple]) -> str:
    if len(shapes) == 1 and len(shapes[0]) == 3 and (known(shapes[0][1]) or 0) >= 5:
        return " (a YOLO detector's (batch, 4 + classes, anchors)? set model.output_format=yolo)"
    if shapes and Detect.cannot_read(shapes, "torchvision") is None:
        return " (torchvision detection outputs? set model.output_format=torchvision)"
    return ""
