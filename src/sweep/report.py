"""Compare and decide: summary.csv, summary.json and report.md (and plots) for a finished sweep,
read from its job folders alone or from MLflow.

    python -m sweep.report multirun/2026-11-23/18-00-00 [--plots] [--max-latency-ms 20]
    python -m sweep.report --experiment sweep [--parent RUN_ID] [--tracking-uri URI] --out DIR

The report holds per-runtime tables (resolution, batch, ms/image, FPS, TFLOPS achieved, TFLOPS
peak, util %), the speedup against a baseline runtime, the end-to-end table when pipelines
logged it, A/B tables with a noise-aware verdict, the best configuration per objective, the
Pareto front, failed jobs, jobs with wrong outputs and disturbed jobs (a figure that cannot be
right; left out of every verdict). The recommendation answers the question the sweep asked: under
the SLO its jobs searched with, by served qps and p99 for serving jobs, else by throughput. The
tables keep the shape of the scripts this tool replaces (benchmarks/results/README.md says which).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep import analysis as an
from sweep.config import TrackingConfig
from sweep.metrics import HEADLINE, title
from sweep.result import PLOTS_DIR, REPORT_FILES, RESULT_FILE
from sweep.sources import Sweep, collect, load_dir, to_row
from sweep.tracking import create_tracker

__all__ = ["Options", "collect", "to_row", "write_reports", "render_markdown", "main"]

log = logging.getLogger(__name__)

ID_COLUMNS = ["job_dir", "job", "status", "error", "runtime", "model", "resolution", "batch",
              "precision", "device_used", "hardware_used"]


@dataclass
class Options:
    """What the report compares against and optimises for."""

    baseline: str = "torch"
    ab: list[str] = field(default_factory=list)
    latency: str = "infer_ms_p50"
    max_latency_ms: float | None = None
    slo_ms: float | None = None  # recommend under this SLO (jobs that searched with it)
    alpha: float = 0.05
    min_effect_pct: float = 1.0
    plots: bool = False
    plot_batch: int | None = None
    plot_resolution: int | None = None


# --- tables --------------------------------------------------------------------------------


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """Identity and headline columns first, then every other column by name."""
    head = [c for c in ID_COLUMNS + HEADLINE if any(c in r for r in rows)]
    rest = sorted({k for r in rows for k in r} - set(head))
    return head + rest


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits + 1}g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(title for _, title in cols) + " |",
             "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(_fmt(r.get(key)) for key, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def _by_config(r: dict[str, Any]) -> tuple:
    return tuple(str(r.get(k)) for k in ("model", "precision")) + (
        r.get("resolution") or 0, r.get("batch") or 0, r.get("job_dir"))


def _display(r: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    d = dict(r)
    d["_res"] = f"{r['resolution']}x{r['resolution']}" if r.get("resolution") else None
    d["_config"] = an.label(r, keys) if keys else ""
    notes = ["OUTPUTS WRONG"] if an.is_wrong(r) else []
    if why := an.disturbed(r):
        notes.append(f"DISTURBED: {why}")
    if why := an.unsteady(r):
        notes.append(f"unsteady: {why}")
    if r.get("rounds"):
        notes.append(f"median of {r['rounds']:.0f} rounds")
    d["_note"] = "; ".join(notes)
    d["_fps_rounds"] = (f"{r['fps_rounds_ci95_low']:,.1f} .. {r['fps_rounds_ci95_high']:,.1f}"
                        if r.get("fps_rounds_ci95_low") is not None else None)
    return d


def _cols(*names: str) -> list[tuple[str, str]]:
    return [(n, title(n)) for n in names]


RUNTIME_TABLE = [("_res", "resolution"), ("batch", "batch"), ("infer_ms_per_img", "ms/image"),
                 *_cols("fps"), ("_fps_rounds", "FPS 95% CI between rounds"),
                 *_cols("energy_j_per_img", "tflops", "tflops_peak", "util_pct")]
# a detector's, segmenter's or any model's check and accuracy: columns where a job has them
TASK_COLUMNS = ("box_agreement_pct", "box_iou_mean", "mask_agreement_pct", "cosine_min",
                "map_50_95", "map_50", "miou")


def section_runtimes(sweep: Sweep, opts: Options, matched: int) -> list[str]:
    """One table per runtime, plus speedup, p50 per batch, CV and a note."""
    ctx = [p for p in an.varying_params(sweep) if p not in ("runtime", "resolution", "batch")]
    speedup = [("speedup_x", f"speedup vs {opts.baseline} (x)")] if matched else []
    cols = [(c, c) for c in ctx] + RUNTIME_TABLE + speedup + [
        *_cols("infer_ms_p50", "infer_cv_pct", "gpu_busy_pct", *TASK_COLUMNS), ("_note", "note")]
    out = []
    for runtime in sorted({str(r.get("runtime")) for r in sweep.ok()}):
        sub = [_display(r, []) for r in sorted(
            (r for r in sweep.ok() if str(r.get("runtime")) == runtime), key=_by_config)]
        shown = [c for c in cols if c[0] not in OPTIONAL or any(r.get(c[0]) is not None
                                                                  for r in sub)]
        out += [f"## runtime={runtime}", "", markdown_table(sub, shown), ""]
    return out


# columns shown only where a job has them (rounds, energy; the peak, utilisation and busy time
# that a CPU has none of)
OPTIONAL = {"_fps_rounds", "energy_j_per_img", "tflops_peak", "util_pct", "gpu_busy_pct",
            *TASK_COLUMNS}


def section_speedup(sweep: Sweep, opts: Options, matched: int) -> list[str]:
    """Each runtime against the baseline job with all other params equal."""
    head = [f"## Speedup vs {opts.baseline}", ""]
    runtimes = {r.get("runtime") for r in sweep.ok()}
    if opts.baseline not in runtimes:
        return head + [f"No finished runtime={opts.baseline} job in this sweep: no speedup "
                       "(choose another with --baseline).", ""]
    if not matched:
        return head + [f"No job of another runtime has a {opts.baseline} job with all other "
                       "params equal: no speedup.", ""]
    varying = an.varying_params(sweep)
    ctx = [p for p in varying if p != "runtime" and not p.startswith("runtime.")]
    options = [p for p in varying if p.startswith("runtime.")]
    rows = [r for r in sweep.ok() if r.get("speedup_x") is not None]
    compared = {an.label(r, ctx) for r in rows if r.get("runtime") != opts.baseline}
    rows = [r for r in rows if an.label(r, ctx) in compared]
    rows.sort(key=lambda r: (an.label(r, ctx), r.get("runtime") != opts.baseline,
                             str(r.get("runtime"))))
    shown = [_display(r, ctx) | {"_runtime": _runtime_name(r, options)} for r in rows]
    cols = [("_runtime", "runtime"), ("_config", "configuration"), ("infer_ms_per_img", "ms/image"),
            ("fps", "FPS"), ("speedup_x", "speedup (x)"), ("_note", "note")]
    return head + [f"speedup = {opts.baseline} ms/image / ms/image, matched on every other param.",
                   "", markdown_table(shown, cols), ""]


def _runtime_name(row: dict[str, Any], options: list[str]) -> str:
    """`compile (mode=max-autotune)`: the runtime with the options of it that vary."""
    set_ = [f"{p.split('.', 1)[1]}={an.fmt_value(row[p])}" for p in options
            if row.get(p) is not None]
    return f"{row.get('runtime')} ({' '.join(set_)})" if set_ else str(row.get("runtime"))


AGREEMENT_WARN_PCT = 99.0  # below this, a pipeline's preprocessing differs from `current`


def section_serving(sweep: Sweep) -> list[str]:
    """Serving scenarios: requests per second and per-request latency, and the highest rate
    under each SLO searched."""
    rows = [r for r in sweep.ok() if r.get("scenario") not in (None, "offline")]
    if not rows:
        return []
    first = ["scenario"]
    ctx = [p for p in an.varying_params(sweep) if p not in first]
    cols = [(k, k) for k in first + ctx] + _cols(
        "server_qps", "latency_ms_p50", "latency_ms_p99", "latency_ms_p999", "queue_ms_p50",
        "batch_fill_pct", "max_qps_at_slo", "fps") + [("_note", "note")]
    shown = [_display(r, []) for r in rows]
    for d in shown:  # what the serving run found first, then the job's other notes
        d["_note"] = "; ".join(filter(None, [d.get("overloaded") or d.get("slo_result"),
                                             d["_note"]]))
    cols = [c for c in cols if c[0] in first + ctx or any(d.get(c[0]) for d in shown)]
    out = ["## Serving", "", "Latency per request, from its arrival to its top-1 on the host, "
           "queueing included; fps is the same job's offline figure.", "",
           markdown_table(shown, cols), ""]
    slo = sorted((r for r in rows if r.get("max_qps_at_slo") is not None),
                 key=lambda r: -r["max_qps_at_slo"])
    if slo:
        out += ["## Highest qps under SLO", "", markdown_table(
            [_display(r, ctx) for r in slo],
            [("_config", "configuration"), ("slo", "SLO"), *_cols("max_qps_at_slo", "fps"),
             ("_note", "note")]), ""]
    return out


def section_e2e(sweep: Sweep) -> list[str]:
    """Runtime, pipeline, flags, inference and end-to-end ms/image, accuracy, and what bounds
    the end-to-end run (decode, inference or host) against its ceilings."""
    rows = [r for r in sweep.ok() if r.get("e2e_ms_per_img") is not None]
    if not rows:
        return []
    first = ["runtime", "precision"] + (["pipeline"] if "pipeline" in sweep.params else [])
    ctx = [p for p in an.varying_params(sweep) if p not in first]
    cols = [(k, k) for k in first + ctx] + [
        ("infer_ms_per_img", "inference ms/image"),
        *_cols("e2e_ms_per_img", "accuracy_top1_pct", "pipeline_agreement_pct",
               "unreadable_files")]
    if any(r.get("bound_by") for r in rows):  # jobs measured with their ceilings
        cols += [*_cols("e2e_vs_ceiling_pct"), ("bound_by", "bound by")]
    cols.append(("_note", "note"))
    rows.sort(key=lambda r: tuple(str(r.get(k)) for k in first + ctx))
    out = ["## End to end", "", markdown_table([_display(r, []) for r in rows], cols), ""]
    host = [(r["job"], r["bound_finding"]) for r in rows if r.get("bound_finding")]
    if host:  # "host" alone does not say what to change: the job's own finding does
        out += ["Bound by the host: " + "; ".join(f"{job}: {why}" for job, why in host) + ".",
                ""]
    drift = [r for r in rows if (r.get("pipeline_agreement_pct") or 100.0) < AGREEMENT_WARN_PCT]
    if drift:  # a preprocessing difference is easy to miss in accuracy alone: say it
        out += ["Preprocessing changes predictions: " + "; ".join(
            f"{r['job']} agrees with pipeline=current on {r['pipeline_agreement_pct']:.1f}% of "
            "the images" for r in drift) + ".", ""]
    return out


AB_NOTE = ("Pairs differ in this param alone. delta = (B - A) / A of the mean; the verdict on "
           "inference time comes from every timed call of both jobs: a real difference needs "
           "Mann-Whitney U p < {alpha:g}, a 95% bootstrap CI of delta that excludes 0, and "
           "|delta| >= {effect:g}%; neither test, or a smaller delta, is no real difference; "
           "one test without the other is inconclusive. Other metrics are single values per "
           "job: their delta is shown, not tested.")
AB_NOTE_ROUNDS = ("Pairs differ in this param alone. delta = (B - A) / A; measured in rounds, "
                  "every metric kept per round is tested on the ratio B/A of each round, which "
                  "cancels a drift that moves both jobs of a round alike: a real difference "
                  "needs a paired t-test on the log ratios with p < {alpha:g} and |delta| >= "
                  "{effect:g}%; the CI is the t interval of that ratio.")


def _ab_rows(pairs: list[an.ABPair]) -> list[dict[str, Any]]:
    rows = []
    for p in pairs:
        for m in p.metrics:
            t = m.test
            delta = f"{m.delta_pct:+.1f}" if m.delta_pct is not None else None
            rows.append({"config": p.context or "all", "metric": m.name, "a": m.a, "b": m.b,
                         "delta": delta,
                         "ci": f"{t.ci_low_pct:+.1f} .. {t.ci_high_pct:+.1f}" if t else "",
                         "p": t.p_value if t else None, "verdict": m.verdict(p.b_name)})
    return rows


def section_ab(sweep: Sweep, opts: Options) -> list[str]:
    """One table per A/B param, with a sentence that sums it up."""
    out, by_round = [], False
    for param in an.ab_params(sweep, opts.ab):
        pairs = an.ab_pairs(sweep, param, opts.alpha, opts.min_effect_pct)
        out += [f"## A/B: {param}", "", an.ab_summary(param, pairs), ""]
        if not pairs:
            continue
        a_name = an.fmt_value(pairs[0].a.get(param))
        rounds = any(m.test and m.test.basis == "rounds" for p in pairs for m in p.metrics)
        by_round = by_round or rounds
        test = "p (paired by round)" if rounds else "p (U test)"
        cols = [("config", "configuration"), ("metric", "metric"), ("a", f"A: {param}={a_name}"),
                ("b", "B"), ("delta", "delta %"), ("ci", "95% CI of delta %"),
                ("p", test), ("verdict", "verdict")]
        out += [markdown_table(_ab_rows(pairs), cols), ""]
    if out:
        note = AB_NOTE_ROUNDS if by_round else AB_NOTE
        if left := [r["job_dir"] for r in sweep.ok() if an.disturbed(r)]:
            out += ["Left out of every pair as disturbed (see Disturbed jobs): " +
                    ", ".join(left) + ".", ""]
        out += [an.noise_basis(sweep), "",
                note.format(alpha=opts.alpha, effect=opts.min_effect_pct), ""]
    return out


def recommendation(sweep: Sweep, opts: Options) -> str:
    """The answer to the question the sweep asked (sweep.analysis.recommendation): under the
    SLO its jobs searched with unless --slo-ms names another."""
    return an.recommendation(sweep, opts.latency, opts.max_latency_ms, opts.baseline,
                             opts.slo_ms)


def section_decision(sweep: Sweep, opts: Options, matched: int) -> list[str]:
    """The recommendation, the winner of each objective and the Pareto front."""
    out = ["## Recommendation", "", recommendation(sweep, opts), ""]
    keys = an.varying_params(sweep)
    best = [{**_display(b.row, keys), "objective": b.objective} if b.row else
            {"objective": b.objective, "_config": "none qualifies"}
            for b in an.best_configs(sweep, opts.latency, opts.max_latency_ms)]
    latency, rate = an.front_keys(sweep, opts.latency)
    ok = sweep.ok()
    if rate == "server_qps":  # serving jobs alone: what they measured, not the offline figures
        lat = "p99 per request"
        cols = _cols("server_qps", "latency_ms_p99")
        cols += _cols("max_qps_at_slo") if any(r.get("max_qps_at_slo") for r in ok) else []
    else:
        lat = an.latency_name(opts.latency)
        cols = [("fps", "FPS"), (opts.latency, f"latency ms ({lat})"),
                ("infer_ms_per_img", "ms/image")]
        cols += [("speedup_x", f"speedup vs {opts.baseline} (x)")] if matched else []
        cols += [("e2e_fps", "E2E FPS")] if any(r.get("e2e_fps") for r in ok) else []
        cols += _cols("server_qps", "latency_ms_p99") if any(
            r.get("server_qps") for r in ok) else []
    out += ["## Best configuration", "", "Among finished jobs whose outputs pass the check.", "",
            markdown_table(best, [("objective", "objective"), ("_config", "configuration")] + cols),
            ""]
    front = [_display(r, keys) for r in an.pareto_front(sweep.rows, latency, rate)]
    if front:
        what = title(rate)
        out += ["## Pareto front (latency vs throughput)", "",
                f"No other job has both a lower {lat} and a higher {what}.", "",
                markdown_table(front, [("_config", "configuration")] + cols[:3]), ""]
    return out


def section_problems(sweep: Sweep) -> list[str]:
    """Jobs with wrong outputs (kept out of 'best') and failed jobs with their reasons."""
    out = []
    shaken = [r | {"_why": why} for r in sweep.ok() if (why := an.disturbed(r))]
    if shaken:
        out += ["## Disturbed jobs (excluded from the recommendation, best and A/B)", "",
                "A figure of each of these cannot be right: the machine was disturbed while it "
                "measured. Nothing is concluded from them until they are measured again.", "",
                markdown_table(shaken, [("job_dir", "job"), ("_why", "why, and what to do")]),
                ""]
    wrong = [r for r in sweep.ok() if an.is_wrong(r)]
    if wrong:
        cols = [("job_dir", "job"), *_cols("max_abs_err", "agreement_top1_pct"),
                *[c for c in _cols(*TASK_COLUMNS[:4]) if any(r.get(c[0]) is not None
                                                            for r in wrong)],
                ("correctness", "reason")]
        out += ["## Outputs wrong (excluded from best and A/B)", "",
                markdown_table(wrong, cols), ""]
    failed = [r for r in sweep.rows if r.get("status") != "ok"]
    if failed:
        out += ["## Failed jobs", "",
                markdown_table(failed, [("job_dir", "job"), ("error", "reason")]), ""]
    return out


def section_plots(plots: list) -> list[str]:
    if not plots:
        return []
    out = ["## Plots", ""]
    for p in plots:
        if p.path is None and f"- {p.note}" not in out:
            out.append(f"- {p.note}")
        elif p.path is None:
            continue
        else:
            out += ["", f"![{p.note}]({PLOTS_DIR}/{p.path.name})", ""]
    return out + [""]


def render_markdown(sweep: Sweep, opts: Options | None = None, plots: list | None = None,
                    matched: int | None = None) -> str:
    """The whole report.md."""
    opts = opts or Options()
    matched = an.add_speedups(sweep, opts.baseline) if matched is None else matched
    ok = sweep.ok()
    out = [f"# Sweep: {sweep.name}", "",
           f"{len(sweep.rows)} jobs: {len(ok)} ok, {len(sweep.rows) - len(ok)} failed.", ""]
    basis = sorted({str(r["util_basis"]) for r in ok if r.get("util_basis")})
    if basis:
        out += ["Utilisation is against: " + "; ".join(basis) + ".", ""]
    if ok:
        out += section_decision(sweep, opts, matched) + section_runtimes(sweep, opts, matched)
        out += section_speedup(sweep, opts, matched) + section_e2e(sweep)
        out += section_serving(sweep) + section_ab(sweep, opts)
    out += section_problems(sweep) + section_plots(plots or [])
    return "\n".join(out)


# --- files -----------------------------------------------------------------------------------


def _ab_json(sweep: Sweep, opts: Options) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for param in an.ab_params(sweep, opts.ab):
        out[param] = [{"a": p.a["job_dir"], "b": p.b["job_dir"], "metric": m.name,
                       "delta_pct": m.delta_pct, "verdict": m.verdict(p.b_name),
                       "p_value": m.test.p_value if m.test else None,
                       "ci95_pct": [m.test.ci_low_pct, m.test.ci_high_pct] if m.test else None}
                      for p in an.ab_pairs(sweep, param, opts.alpha, opts.min_effect_pct)
                      for m in p.metrics]
    return out


def summary_json(sweep: Sweep, opts: Options) -> dict[str, Any]:
    """summary.json: the rows plus what the report decided, by job folder name."""
    best = an.best_configs(sweep, opts.latency, opts.max_latency_ms)
    return {"sweep_dir": sweep.source, "name": sweep.name, "parent_run_id": sweep.parent_run_id,
            "params": sweep.params, "baseline": opts.baseline, "latency": opts.latency,
            "recommendation": recommendation(sweep, opts),
            "best": {b.objective: b.row["job_dir"] if b.row else None for b in best},
            "pareto_front": [r["job_dir"] for r in an.pareto_front(
                sweep.rows, *an.front_keys(sweep, opts.latency))],
            "ab": _ab_json(sweep, opts),
            "disturbed": {r["job_dir"]: why for r in sweep.ok() if (why := an.disturbed(r))},
            "jobs": sweep.rows}


def _write_plots(sweep: Sweep, out_dir: Path, opts: Options) -> list:
    from sweep.plots import write_plots

    try:
        return write_plots(sweep, out_dir / PLOTS_DIR, baseline=opts.baseline,
                           ab=an.ab_params(sweep, opts.ab), batch=opts.plot_batch,
                           resolution=opts.plot_resolution)
    except Exception as e:  # a plot must never cost the summary
        log.warning("plots not written: %s", e)
        from sweep.plots import Plot

        return [Plot("plots", None, f"plots not written: {type(e).__name__}: {e}")]


def write_reports(out_dir: Path, sweep: Sweep | list | None = None,
                  opts: Options | None = None) -> list[Path]:
    """Write summary.csv, summary.json, report.md (and plots/*.png) into `out_dir`.

    `sweep` defaults to the job folders under `out_dir`; returns the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep = sweep if isinstance(sweep, Sweep) else load_dir(out_dir)
    opts = opts or Options()
    matched = an.add_speedups(sweep, opts.baseline)
    plots = _write_plots(sweep, out_dir, opts) if opts.plots else []
    csv_path, json_path, md_path = (out_dir / n for n in REPORT_FILES)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns(sweep.rows))
        writer.writeheader()
        writer.writerows(sweep.rows)
    json_path.write_text(json.dumps(summary_json(sweep, opts), indent=2, default=str))
    md_path.write_text(render_markdown(sweep, opts, plots, matched))
    return [csv_path, json_path, md_path] + [p.path for p in plots if p.path is not None]


# --- the tracking store ------------------------------------------------------------------


def _tracker(sweep: Sweep, explicit_uri: str | None, experiment: str | None = None):
    """The store a sweep was read from or recorded, or the one --tracking-uri names."""
    experiment = experiment or next(
        (str(r["tracking.experiment"]) for r in sweep.rows if r.get("tracking.experiment")),
        TrackingConfig.experiment)
    configured = next((str(r["tracking.uri"]) for r in sweep.rows if r.get("tracking.uri")),
                      None)
    cfg = TrackingConfig(uri=configured or TrackingConfig.uri, experiment=experiment)
    return create_tracker(cfg, explicit_uri, sweep.tracking_uri)


def _log_to_parent(sweep: Sweep, out_dir: Path, uri: str | None) -> str:
    if not sweep.parent_run_id:
        raise SystemExit(f"no MLflow parent run recorded for {sweep.source} (sweep.json)")
    _tracker(sweep, uri).log_report(sweep.parent_run_id, out_dir)
    return sweep.parent_run_id


# --- command line ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sweep.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", type=Path, nargs="?", help="a multirun folder of job folders")
    p.add_argument("--experiment", help="read the sweep from this MLflow experiment instead")
    p.add_argument("--parent", help="the sweep's parent run id (default: the latest sweep)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
                   "or the sweep's own, or sqlite:///mlflow.db)")
    p.add_argument("--out", type=Path, help="where to write (default: the multirun folder; "
                   "with --experiment: report-<parent run id>)")
    p.add_argument("--baseline", default="torch", help="runtime to compute speedups against")
    p.add_argument("--ab", action="append", default=[], metavar="PARAM",
                   help="A/B this param (repeatable); varying boolean params are always A/B'd")
    p.add_argument("--latency", choices=["p50", "p90", "p99"], default="p50",
                   help="latency percentile (per batch call) for 'best' and the Pareto front")
    p.add_argument("--max-latency-ms", type=float, help="latency bound for the best FPS (of "
                   "serving jobs without an SLO: on the per-request p99)")
    p.add_argument("--slo-ms", type=float, help="recommend the most qps under this SLO (jobs "
                   "that ran scenario=server scenario.slo_ms=the same; default: every SLO the "
                   "jobs searched with)")
    p.add_argument("--min-effect-pct", type=float, default=1.0,
                   help="smaller A/B differences count as no real difference")
    p.add_argument("--plots", action="store_true", help="also write plots/*.png")
    p.add_argument("--plot-batch", type=int, help="batch of the per-resolution plots")
    p.add_argument("--plot-resolution", type=int, help="resolution of the per-batch plots")
    p.add_argument("--log-to-mlflow", action="store_true",
                   help="upload the job folders' results to MLflow (each job once), then the "
                   "report to the sweep's parent run; for sweeps that ran while MLflow was down")
    p.add_argument("--log-to-parent", action="store_true",
                   help="log the report and plots as artifacts of the sweep's MLflow parent run")
    return p


def _options(args: argparse.Namespace) -> Options:
    return Options(baseline=args.baseline, ab=args.ab, latency=f"infer_ms_{args.latency}",
                   max_latency_ms=args.max_latency_ms, slo_ms=args.slo_ms,
                   min_effect_pct=args.min_effect_pct,
                   plots=args.plots, plot_batch=args.plot_batch,
                   plot_resolution=args.plot_resolution)


def _load(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[Sweep, Path]:
    if (args.sweep_dir is None) == (args.experiment is None):
        parser.error("give a multirun folder or --experiment NAME (one of them)")
    if args.experiment:
        try:
            tracker = create_tracker(TrackingConfig(experiment=args.experiment),
                                     args.tracking_uri, read_only=True)
            sweep = tracker.load_sweep(args.parent)
        except LookupError as e:
            parser.error(str(e))
        return sweep, args.out or Path(f"report-{sweep.parent_run_id}")
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder")
    sweep = load_dir(args.sweep_dir)
    if not sweep.rows:
        parser.error(f"no job folder with a {RESULT_FILE} under {args.sweep_dir}")
    return sweep, args.out or args.sweep_dir


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.log_to_mlflow:
        if args.sweep_dir is None:
            parser.error("--log-to-mlflow uploads a multirun folder: give its path")
        from sweep.tracking import upload_sweep

        try:
            uploaded, already, parent = upload_sweep(args.sweep_dir, args.tracking_uri)
        except ConnectionError as e:  # said in seconds (create_tracker probes the server)
            print(f"error: nothing uploaded ({e}); the results stay in {args.sweep_dir}: run "
                  "this again once the store answers", file=sys.stderr)
            return 1
        print(f"MLflow: {uploaded} jobs uploaded, {already} were there already; parent {parent}")
        args.log_to_parent = True
    sweep, out_dir = _load(args, parser)
    opts = _options(args)
    for path in write_reports(out_dir, sweep, opts):
        print(path)
    failed = sum(r["status"] != "ok" for r in sweep.rows)
    print(f"{len(sweep.rows)} jobs, {failed} failed")
    print(recommendation(sweep, opts))
    if args.log_to_parent:
        print(f"logged to MLflow parent run {_log_to_parent(sweep, out_dir, args.tracking_uri)}")
    for reason in sweep.corrupt:  # reported as failed jobs above; the exit status says so too
        print(f"error: {reason}", file=sys.stderr)
    return 1 if sweep.corrupt else 0


if __name__ == "__main__":
    sys.exit(main())
