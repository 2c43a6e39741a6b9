"""Plot styling that a reader relies on across plots: a runtime keeps its colour."""

from __future__ import annotations

from sweep.plots import RUNTIME_COLOURS, plot_fps_vs_batch
from sweep.sources import Sweep


def _sweep(runtimes: list[str]) -> Sweep:
    rows = [{"job": f"{rt}-b{b}", "status": "ok", "runtime": rt, "batch": b, "resolution": 32,
             "precision": "fp32", "fps": 10.0 * b * (i + 1)}
            for i, rt in enumerate(runtimes) for b in (1, 2, 4)]
    return Sweep("s", rows, ["runtime", "batch", "resolution", "precision"])


def _colours(sweep: Sweep) -> dict[str, str]:
    fig, _ = plot_fps_vs_batch(sweep)
    lines = fig.axes[0].get_lines()
    return {line.get_label(): line.get_color() for line in lines}


def test_a_runtime_keeps_its_colour_whichever_runtimes_a_sweep_has():
    one = _colours(_sweep(["onnx", "torch"]))
    other = _colours(_sweep(["trt", "compile", "onnx"]))
    assert one["runtime=onnx"] == other["runtime=onnx"] == RUNTIME_COLOURS["onnx"]
    assert one["runtime=torch"] == RUNTIME_COLOURS["torch"]
    assert len(set(other.values())) == 3
