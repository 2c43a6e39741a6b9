"""The sweep's plots, as matplotlib Figures (no pyplot: no global state, Agg when saved).

Each ``plot_*`` returns ``(figure, note)``; the figure is None when the sweep has no variation
for it and the note says why. The notebook shows the same figures; ``write_plots`` saves PNGs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from sweep.analysis import (
    ab_pairs,
    add_speedups,
    disturbed,
    eligible,
    fmt_value,
    is_wrong,
    label,
    varying_params,
)
from sweep.metrics import STAGES, axis_label
from sweep.sources import Sweep

Row = dict[str, Any]
PARAM_NAMES = {"resolution": "resolution (px, square)", "batch": "batch"}


def _name(key: str) -> str:
    return PARAM_NAMES.get(key) or axis_label(key)


@dataclass
class Plot:
    """One plot of the report: a file name, the saved path (None when skipped), a caption."""

    name: str
    path: Path | None
    note: str


def _figure(height: float = 4.5, width: float = 7.0) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def pick_fixed(rows: list[Row], x: str, fixed: str) -> Any:
    """The value of `fixed` that shows the most distinct values of `x` (ties: the largest)."""
    seen: dict[Any, set] = {}
    for r in rows:
        seen.setdefault(r.get(fixed), set()).add(r.get(x))
    return max(seen, key=lambda v: (len(seen[v]), v if isinstance(v, int | float) else 0))


def _lines(sweep: Sweep, rows: list[Row], x: str, fixed: str) -> dict[str, list[Row]]:
    keys = [p for p in varying_params(sweep) if p not in (x, fixed)]
    lines: dict[str, list[Row]] = {}
    for r in sorted(rows, key=lambda r: r[x]):
        lines.setdefault(label(r, keys) if keys else "all", []).append(r)
    return lines


# one colour per runtime in every plot (matplotlib's default cycle), so a runtime keeps its
# colour from plot to plot and sweep to sweep; lines of one runtime differ by line style
RUNTIME_COLOURS = {"torch": "C0", "compile": "C1", "onnx": "C2", "trt": "C3"}
LINE_STYLES = ("-", "--", ":", "-.")


def line_style(row: Row, seen: dict[str, int]) -> dict[str, str]:
    """Colour (by the row's runtime) and line style (its n-th line of that runtime)."""
    runtime = str(row.get("runtime"))
    n = seen.get(runtime, 0)
    seen[runtime] = n + 1
    colour = RUNTIME_COLOURS.get(runtime, f"C{4 + sum(map(ord, runtime)) % 6}")
    return {"color": colour, "linestyle": LINE_STYLES[n % len(LINE_STYLES)]}


def plot_metric_vs(sweep: Sweep, x: str, fixed: str, metric: str = "fps",
                   fixed_value: Any = None, rows: list[Row] | None = None,
                   what: str = "") -> tuple[Figure | None, str]:
    """`metric` against `x` at one value of `fixed`, one line per other varying config."""
    rows = [r for r in (eligible(sweep.rows) if rows is None else rows)
            if r.get(metric) is not None and r.get(x) is not None]
    title = f"{what or _name(metric)} vs {x}"
    if len({r[x] for r in rows}) < 2:
        return None, f"{title}: skipped, the sweep has fewer than two values of {x}"
    value = pick_fixed(rows, x, fixed) if fixed_value is None else fixed_value
    rows = [r for r in rows if r.get(fixed) == value]
    if len({r[x] for r in rows}) < 2:
        return None, f"{title}: skipped, fewer than two values of {x} at {fixed}={value}"
    fig, ax = _figure()
    seen: dict[str, int] = {}
    for name, line in _lines(sweep, rows, x, fixed).items():
        drawn = ax.plot([r[x] for r in line], [r[metric] for r in line], marker="o",
                        label=name, **line_style(line[0], seen))[0]
        low, high = f"{metric}_rounds_ci95_low", f"{metric}_rounds_ci95_high"
        if all(r.get(low) is not None for r in line):  # measured in rounds: their spread
            ax.errorbar([r[x] for r in line], [r[metric] for r in line],
                        yerr=[[max(r[metric] - r[low], 0) for r in line],
                              [max(r[high] - r[metric], 0) for r in line]],
                        fmt="none", capsize=3, color=drawn.get_color())
    xs = sorted({r[x] for r in rows})
    if x == "batch":
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(v) for v in xs])
    ax.minorticks_off()
    if metric == "speedup_x":
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set(xlabel=_name(x), ylabel=_name(metric),
           title=f"{title} ({fixed} = {value})")
    ax.legend(fontsize="small")
    return fig, f"{title} at {fixed}={value}"


def plot_fps_vs_resolution(sweep: Sweep, batch: int | None = None):
    """FPS against resolution at a fixed batch."""
    return plot_metric_vs(sweep, "resolution", "batch", "fps", batch)


def plot_fps_vs_batch(sweep: Sweep, resolution: int | None = None):
    """FPS against batch at a fixed resolution."""
    return plot_metric_vs(sweep, "batch", "resolution", "fps", resolution)


def _speedup_rows(sweep: Sweep, baseline: str) -> list[Row]:
    return [r for r in eligible(sweep.rows)
            if r.get("speedup_x") is not None and r.get("runtime") != baseline]


def plot_speedup_vs(sweep: Sweep, x: str, baseline: str = "torch", fixed_value: Any = None):
    """Speedup against the baseline runtime by batch (fixed resolution) or by resolution."""
    add_speedups(sweep, baseline)
    rows = _speedup_rows(sweep, baseline)
    if not rows:
        return None, (f"speedup over {baseline} vs {x}: skipped, no job of another runtime has "
                      f"a matched {baseline} job")
    fixed = "resolution" if x == "batch" else "batch"
    return plot_metric_vs(sweep, x, fixed, "speedup_x", fixed_value, rows,
                          f"speedup over {baseline}")


def plot_stages(sweep: Sweep) -> tuple[Figure | None, str]:
    """End-to-end time split into its stages, one stacked bar per job."""
    rows = [r for r in eligible(sweep.rows) if any(r.get(s) is not None for s in STAGES)]
    if not rows:
        return None, "end-to-end stages: skipped, no job logged " + ", ".join(STAGES)
    stages = [s for s in STAGES if any(r.get(s) is not None for r in rows)]
    keys = varying_params(sweep, rows)
    names = [label(r, keys) if keys else str(r.get("job")) for r in rows]
    fig, ax = _figure(max(3.0, 0.4 * len(rows) + 1.5), _width(names))
    left = [0.0] * len(rows)
    for s in stages:
        widths = [r.get(s) or 0.0 for r in rows]
        ax.barh(range(len(rows)), widths, left=left, label=s.removesuffix("_ms"))
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(range(len(rows)), names, fontsize="small")
    ax.invert_yaxis()
    ax.set(xlabel="ms per image and stage", title="end-to-end stage breakdown")
    fig.legend(loc="outside lower center", ncols=len(stages), fontsize="small")
    return fig, f"end-to-end stage breakdown of {len(rows)} job(s)"


def plot_ab(sweep: Sweep, param: str) -> tuple[Figure | None, str]:
    """Delta % of inference time (B against A) per matched pair, 95% bootstrap CI as error bars."""
    pairs = ab_pairs(sweep, param)
    if not pairs:
        return None, f"A/B {param}: skipped, no two finished jobs differ in {param} alone"
    many_b = len({p.b_name for p in pairs}) > 1
    names = [(p.context or "all") + (f"\n{p.b_name}" if many_b else "") for p in pairs]
    deltas, errors, colours = [], [[], []], []
    for p in pairs:
        m = p.main()
        deltas.append(m.delta_pct or 0.0)
        low, high = (m.test.ci_low_pct, m.test.ci_high_pct) if m.test else (deltas[-1],) * 2
        errors[0].append(max(0.0, deltas[-1] - low))
        errors[1].append(max(0.0, high - deltas[-1]))
        colours.append(AB_COLOURS.get({"unclear": "inconclusive"}.get(m.kind(), m.kind()),
                                      "tab:grey"))
    fig, ax = _figure(max(3.0, 0.5 * len(pairs) + 2.0), _width(names))
    ax.barh(range(len(pairs)), deltas, xerr=errors, color=colours, capsize=4)
    ax.set_yticks(range(len(pairs)), names, fontsize="small")
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", linewidth=0.8)
    b_value = "B" if many_b else fmt_value(pairs[0].b.get(param))
    ax.set(xlabel="inference ms/image: delta % (95% bootstrap CI)")
    fig.suptitle(f"A/B {param}: {b_value} vs {fmt_value(pairs[0].a.get(param))}")
    handles = [Patch(color=c, label=k) for k, c in AB_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize="small")
    return fig, f"A/B {param}: {len(pairs)} matched pair(s)"


AB_COLOURS = {"better": "tab:green", "worse": "tab:red", "inconclusive": "tab:orange",
              "no real difference": "tab:grey"}


def _width(names: list[str]) -> float:
    """Room for the longest tick label beside a 5-inch plot."""
    return 5.0 + 0.065 * max(len(line) for n in names for line in n.split("\n"))


# serving curves: each configuration its own colour and marker; the SLO in black, which no
# series colour is
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
SLO_COLOUR = "black"


def series_styles(n: int) -> list[dict[str, Any]]:
    """`n` styles, no two alike in colour or in marker while n allows (tab10, tab20, then a
    colour wheel), none of them the SLO's colour."""
    from matplotlib import colormaps

    if n <= 10:
        colours = [colormaps["tab10"](i) for i in range(n)]
    elif n <= 20:
        colours = [colormaps["tab20"](i) for i in range(n)]
    else:
        colours = [colormaps["hsv"](i / n) for i in range(n)]
    return [{"color": c, "marker": MARKERS[i % len(MARKERS)]} for i, c in enumerate(colours)]


def _load_steps(row: Row) -> list[dict[str, Any]]:
    """The job's measured load steps, in order of offered load (a search tries them out of
    order)."""
    import json

    try:
        steps = json.loads(row.get("load_curve") or "[]")
    except (TypeError, ValueError):
        return []
    return sorted((s for s in steps if s.get("offered_qps") and s.get("p99_ms")),
                  key=lambda s: s["offered_qps"])


def plot_latency_vs_load(sweep: Sweep) -> tuple[Figure | None, str]:
    """p50 and p99 latency against the offered rate, one line pair per serving job with a
    curve of two or more load steps; the SLO, where searched, as a horizontal line. Each step
    is a measurement in its own right, so a disturbed job (one whose served rate contradicts
    its offline figure) is drawn too, named as disturbed in the legend."""
    curves = [(r, steps) for r in sweep.rows if r.get("status") == "ok" and not is_wrong(r)
              and len(steps := _load_steps(r)) >= 2]
    if not curves:
        return None, "latency vs load: skipped, no serving job measured two or more loads"
    fig, ax = _figure()
    keys = varying_params(sweep)
    for (r, steps), style in zip(curves, series_styles(len(curves)), strict=True):
        name = label(r, keys) if keys else r.get("job", "")
        name += " (DISTURBED)" if disturbed(r) else ""
        x = [s["offered_qps"] for s in steps]
        ax.plot(x, [s["p99_ms"] for s in steps], label=f"{name} p99", **style)
        ax.plot(x, [s.get("p50_ms") for s in steps], linestyle="--", markersize=4,
                markerfacecolor="none", label=f"{name} p50", **style)
    for slo in sorted({float(r["scenario.slo_ms"]) for r, _ in curves
                       if r.get("scenario.slo_ms")}):
        ax.axhline(slo, color=SLO_COLOUR, linestyle=":", linewidth=1.2,
                   label=f"SLO {slo:g} ms")
    ax.set(xlabel="offered load (requests/s)", ylabel="latency (ms)",
           title="latency vs load (p99 solid, p50 dashed; dotted black: the SLO)")
    ax.legend(fontsize="small")
    return fig, "latency vs load: p50 and p99 per offered rate"


def _rate(row: Row) -> tuple[float | None, str]:
    """What a job delivers per second, and what kind: served qps for a serving job (at the
    load its energy was measured), offline FPS otherwise."""
    if row.get("scenario") not in (None, "offline") and row.get("server_qps") is not None:
        return row["server_qps"], "serving"
    return row.get("fps"), "offline"


def plot_fps_vs_energy(sweep: Sweep) -> tuple[Figure | None, str]:
    """Images per second against energy per image, one point per job (offline and serving
    jobs alike), the Pareto front of the least energy and the most images per second joined."""
    points = [(r["energy_j_per_img"], rate, kind, r) for r in eligible(sweep.rows)
              if r.get("energy_j_per_img") is not None
              and (rate := _rate(r)[0]) is not None and (kind := _rate(r)[1])]
    if len(points) < 2:
        return None, ("FPS vs energy: skipped, fewer than two jobs with energy_j_per_img and "
                      "FPS or served qps")
    fig, ax = _figure()
    keys = varying_params(sweep)
    for (j, rate, kind, r), style in zip(points, series_styles(len(points)), strict=True):
        name = label(r, keys) if keys else r["job"]
        ax.scatter(j, rate, label=f"{name} ({kind})", color=style["color"],
                   marker=style["marker"])
    front: list[tuple] = []
    for p in sorted(points, key=lambda p: (p[0], -p[1])):  # least energy first
        if not front or p[1] > front[-1][1]:
            front.append(p)
    ax.plot([p[0] for p in front], [p[1] for p in front], color="grey", linestyle="--",
            linewidth=0.8, label="Pareto front")
    ax.set(xlabel=_name("energy_j_per_img"),
           ylabel="images/s (offline: FPS; serving: served qps)",
           title="images/s vs energy per image (up and left is better)")
    ax.legend(fontsize="small")
    return fig, "FPS vs energy per image, with the Pareto front"


def all_plots(sweep: Sweep, baseline: str = "torch", ab: list[str] = (),
              batch: int | None = None, resolution: int | None = None) -> list[tuple[str, Any]]:
    """(file stem, (figure, note)) for every plot of the report, in order."""
    out = [("fps_vs_resolution", plot_fps_vs_resolution(sweep, batch)),
           ("fps_vs_batch", plot_fps_vs_batch(sweep, resolution)),
           ("speedup_vs_batch", plot_speedup_vs(sweep, "batch", baseline, resolution)),
           ("speedup_vs_resolution", plot_speedup_vs(sweep, "resolution", baseline, batch)),
           ("e2e_stages", plot_stages(sweep))]
    if any(r.get("energy_j_per_img") is not None for r in sweep.rows):
        out.append(("fps_vs_energy", plot_fps_vs_energy(sweep)))
    if any(r.get("load_curve") for r in sweep.rows):
        out.append(("latency_vs_load", plot_latency_vs_load(sweep)))
    out += [(f"ab_{p.replace('.', '_')}", plot_ab(sweep, p)) for p in ab]
    return out


def _file_name(stem: str, note: str) -> str:
    """fps_vs_batch + 'at resolution=224' -> fps_vs_batch_resolution224.png"""
    tail = note.rsplit(" at ", 1)[1].replace("=", "") if " at " in note else ""
    return f"{stem}_{tail}.png" if tail else f"{stem}.png"


def write_plots(sweep: Sweep, out_dir: Path, **kwargs: Any) -> list[Plot]:
    """Save every plot that the sweep can draw as a PNG under `out_dir`; notes for the rest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    for stem, (fig, note) in all_plots(sweep, **kwargs):
        if fig is None:
            plots.append(Plot(stem, None, note))
            continue
        path = out_dir / _file_name(stem, note)
        fig.savefig(path, dpi=110)
        plots.append(Plot(stem, path, note))
    return plots
