"""Plot styling that a reader relies on: a runtime keeps its colour across plots; on the
latency-vs-load plot each configuration has its own colour and marker, in order of load."""

from __future__ import annotations

import json

from matplotlib.colors import to_hex

from sweep.plots import (
    RUNTIME_COLOURS,
    SLO_COLOUR,
    plot_fps_vs_batch,
    plot_fps_vs_energy,
    plot_latency_vs_load,
    series_styles,
)
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


# --- serving: latency against load, and the energy Pareto plot -------------------------------


def _serving_rows(n: int) -> list[dict]:
    """`n` server jobs of one runtime (so a colour per runtime would make them one), their
    load steps in the order an SLO search tried them, not by load."""
    rows = []
    for i in range(n):
        steps = [{"offered_qps": q * (i + 1), "p50_ms": q / 10, "p99_ms": q / 5,
                  "server_qps": q * (i + 1), "overloaded": False} for q in (80, 10, 40, 20, 160)]
        rows.append({"job": f"b{2 ** i}", "job_dir": f"{i}_b{2 ** i}", "status": "ok",
                     "runtime": "torch", "batch": 2 ** i, "scenario": "server",
                     "scenario.slo_ms": 30.0, "load_curve": json.dumps(steps),
                     "fps": 500.0 * (i + 1), "server_qps": 60.0 * (i + 1),
                     "energy_j_per_img": 0.5 / (i + 1)})
    return rows


def test_latency_vs_load_gives_each_configuration_its_colour_and_marker_in_load_order():
    sweep = Sweep("s", _serving_rows(4), ["runtime", "batch", "scenario", "scenario.slo_ms"])
    fig, _ = plot_latency_vs_load(sweep)
    lines = fig.axes[0].get_lines()
    p99 = [line for line in lines if line.get_label().endswith(" p99")]
    assert len(p99) == 4
    colours = [to_hex(line.get_color()) for line in p99]
    assert len(set(colours)) == 4 and len({line.get_marker() for line in p99}) == 4
    for line in p99:  # joined in order of offered load
        x = list(line.get_xdata())
        assert x == sorted(x) and len(x) == 5
    slo = [line for line in lines if line.get_label().startswith("SLO")]
    assert [line.get_label() for line in slo] == ["SLO 30 ms"]
    assert to_hex(slo[0].get_color()) not in colours + [
        to_hex(line.get_color()) for line in lines if line not in slo]


def test_a_disturbed_serving_job_keeps_its_measured_curve_named_as_disturbed():
    """Its served rate contradicts its offline figure (so it wins nothing), but each load step
    was measured: the plot draws it and says so, instead of dropping the plot."""
    rows = _serving_rows(2)
    rows[0]["fps"] = 10.0  # served 60 qps against an offline capacity of 10/s
    sweep = Sweep("s", rows, ["runtime", "batch", "scenario", "scenario.slo_ms"])
    fig, _ = plot_latency_vs_load(sweep)
    p99 = sorted(line.get_label() for line in fig.axes[0].get_lines()
                 if line.get_label().endswith(" p99"))
    assert p99 == ["batch=1 (DISTURBED) p99", "batch=2 p99"]


def test_series_styles_stay_distinct_past_ten_and_never_take_the_slo_colour():
    for n in (3, 10, 14):
        styles = series_styles(n)
        colours = {to_hex(s["color"]) for s in styles}
        assert len(colours) == n and to_hex(SLO_COLOUR) not in colours
        assert len({(to_hex(s["color"]), s["marker"]) for s in styles}) == n


def test_energy_pareto_plot_holds_serving_jobs_at_their_served_rate():
    offline = {"job": "off", "job_dir": "9_off", "status": "ok", "runtime": "onnx", "batch": 8,
               "fps": 900.0, "energy_j_per_img": 0.2}
    sweep = Sweep("s", _serving_rows(2) + [offline], ["runtime", "batch", "scenario"])
    fig, _ = plot_fps_vs_energy(sweep)
    points = {c.get_label(): tuple(c.get_offsets()[0]) for c in fig.axes[0].collections}
    serving = {k: v for k, v in points.items() if k.endswith("(serving)")}
    assert len(serving) == 2 and sorted(v[1] for v in serving.values()) == [60.0, 120.0]
    assert [v for k, v in points.items() if k.endswith("(offline)")] == [(0.2, 900.0)]
