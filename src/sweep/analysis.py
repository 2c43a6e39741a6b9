"""What a sweep says: speedups against a baseline, A/B verdicts, the best configuration per
objective, the Pareto front of latency against throughput, and which configuration to deploy.

Rows are the flat dicts of :mod:`sweep.sources`; jobs are matched on every config param except
the ones being compared (bookkeeping such as tracking.* never counts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sweep import rounds
from sweep.config import BenchConfig
from sweep.metrics import AB
from sweep.significance import ALPHA, MIN_EFFECT_PCT, Comparison, compare, compare_rounds
from sweep.sources import Sweep

Row = dict[str, Any]
CORE = ("runtime", "model", "resolution", "batch", "precision", "pipeline")
IGNORED_PREFIXES = ("tracking.", "cache_dir")
CHOICE_OPTIONS = ("runtime.", "pipeline.")  # options that only some choices of a group have


def is_wrong(row: Row) -> bool:
    """Outputs marked wrong against PyTorch fp32 (metric `correct` == 0)."""
    return row.get("correct") == 0


def eligible(rows: Iterable[Row]) -> list[Row]:
    """Rows that may win: finished, outputs not marked wrong, no figure that cannot be right."""
    return [r for r in rows if r.get("status") == "ok" and not is_wrong(r) and not disturbed(r)]


# --- figures that cannot be right -----------------------------------------------------------

# a figure this far past its ceiling is a contradiction, not timing noise
IMPOSSIBLE_MARGIN_PCT = 10.0


def _num(row: Row, key: str) -> float | None:
    v = row.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) \
        and math.isfinite(v) else None


def _past_e2e_ceiling(row: Row) -> str | None:
    """End to end faster than the slower of its decode and inference ceilings."""
    e2e, dec, inf = (_num(row, k) for k in ("e2e_fps", "decode_ceiling_fps", "infer_ceiling_fps"))
    if e2e is not None and dec and inf:
        pct = 100 * e2e / min(dec, inf)
        ceilings = f"decode alone {dec:,.0f}/s, inference alone {inf:,.0f}/s"
    elif (pct := _num(row, "e2e_vs_ceiling_pct")) is not None:  # the ratio without the rates
        ceilings = "as e2e_vs_ceiling_pct"
    else:
        return None
    if pct <= 100 + IMPOSSIBLE_MARGIN_PCT:
        return None
    return (f"end to end ran at {pct:.0f}% of the slower of its ceilings ({ceilings}), and no "
            "run can be faster than its slowest stage alone")


def _past_capacity(row: Row) -> str | None:
    """Served requests per second above what the runtime does with full batches back to back."""
    served = _num(row, "server_qps")
    ceilings = {k: v for k in ("capacity_qps", "fps") if (v := _num(row, k))}
    if served is None or not ceilings:
        return None
    name, top = max(ceilings.items(), key=lambda kv: kv[1])  # load only ever slows a figure
    if 100 * served / top <= 100 + IMPOSSIBLE_MARGIN_PCT:
        return None
    what = "full batches back to back" if name == "capacity_qps" else "offline FPS"
    return (f"it served {served:,.1f} qps, above its offline capacity of {top:,.1f}/s "
            f"({name}: {what})")


# a t interval over one job's few timed calls: a negative low says those calls scattered (the
# job is unsteady), not that a figure is impossible
WITHIN_JOB_BOUNDS = ("infer_ms_per_img_ci95_low",)


def _negative_bound(row: Row) -> str | None:
    """A lower 95% bound below zero of a figure that cannot be negative (rates, times, J)."""
    low = {k: v for k in row if k.endswith("_ci95_low") and k not in WITHIN_JOB_BOUNDS
           and (v := _num(row, k)) is not None and v < 0}
    if not low:
        return None
    return "its 95% bound " + ", ".join(f"{k} = {v:,.3g}" for k, v in sorted(low.items())) + \
        " is negative, of a figure that cannot be"


def remeasure_advice(row: Row) -> str:
    """What to type to measure a disturbed job again: rounds (more of them if it had some)."""
    done = _num(row, "rounds") or _num(row, "bench.rounds") or 1
    n = max(3, int(done) + 2) if done > 1 else 3
    more = "more " if done > 1 else ""
    return f"re-measure it in {more}rounds on a quiet machine (bench.rounds={n})"


def disturbed(row: Row) -> str | None:
    """Why a job's figures cannot all be right (the machine was disturbed while it measured),
    with the advice to re-measure; None when nothing is impossible. Such a job takes no part in
    verdicts, best configurations or recommendations."""
    why = [w for check in (_past_e2e_ceiling, _past_capacity, _negative_bound)
           if (w := check(row))]
    if not why:
        return None
    return "; ".join(why) + f": {remeasure_advice(row)}"


def _hashable(value: Any) -> Any:
    return value if isinstance(value, int | float | str | bool | None) else repr(value)


def _order(name: str) -> tuple[int, str]:
    return (CORE.index(name) if name in CORE else len(CORE), name)


def varying_params(sweep: Sweep, rows: list[Row] | None = None) -> list[str]:
    """Params with more than one value among the finished jobs, core ones first."""
    rows = sweep.ok() if rows is None else rows
    out = [p for p in sweep.params if not p.startswith(IGNORED_PREFIXES)
           and len(_values(rows, p)) > 1]
    return sorted(out, key=_order)


def _values(rows: list[Row], p: str) -> set:
    """Distinct values of `p`; an option of one runtime or pipeline (runtime.opset) counts only
    where it is set, so it does not 'vary' merely because other runtimes lack it."""
    values = {_hashable(r.get(p)) for r in rows}
    return values - {None} if p.startswith(CHOICE_OPTIONS) else values


def fmt_value(value: Any) -> str:
    """A param value as one would type it on the command line."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def label(row: Row, keys: Iterable[str]) -> str:
    """`runtime=torch batch=8`: the given params of a row, as overrides."""
    return " ".join(f"{k}={fmt_value(row.get(k))}" for k in keys) or str(row.get("job"))


def deploy_label(sweep: Sweep, row: Row) -> str:
    """Every core param plus whatever else varies: enough to reproduce the configuration."""
    keys = [k for k in CORE if k in sweep.params]
    return label(row, keys + [k for k in varying_params(sweep) if k not in keys])


def config_key(row: Row, params: list[str], skip: Callable[[str], bool]) -> tuple:
    """The row's params except those `skip` names: jobs with equal keys are comparable."""
    return tuple((p, _hashable(row.get(p))) for p in params
                 if not skip(p) and not p.startswith(IGNORED_PREFIXES))


# --- speedup against a baseline runtime ----------------------------------------------------


def _not_runtime(p: str) -> bool:
    return p == "runtime" or p.startswith("runtime.")


def add_speedups(sweep: Sweep, baseline: str = "torch") -> int:
    """Set `speedup_x` = baseline ms/image / ms/image on rows with a matched baseline job.

    Returns how many non-baseline rows found their baseline.
    """
    base = {}
    for r in sweep.ok():
        if r.get("runtime") == baseline and r.get("infer_ms_per_img"):
            base.setdefault(config_key(r, sweep.params, _not_runtime), r)
    matched = 0
    for r in sweep.ok():
        ref = base.get(config_key(r, sweep.params, _not_runtime))
        if ref is not None and r.get("infer_ms_per_img"):
            r["speedup_x"] = ref["infer_ms_per_img"] / r["infer_ms_per_img"]
            matched += r.get("runtime") != baseline
    return matched


# --- A/B --------------------------------------------------------------------------------


@dataclass
class ABMetric:
    """One metric of one A/B pair: values, delta %, and the test when raw samples exist."""

    name: str
    a: float | None
    b: float | None
    delta_pct: float | None
    lower_is_better: bool
    test: Comparison | None = None
    note: str = ""

    def kind(self) -> str:
        """better | worse | same | unclear | few | untested (B against A)."""
        t = self.test
        if t is None:
            return "untested"
        if t.verdict in ("too few samples", "inconclusive"):
            return {"too few samples": "few", "inconclusive": "unclear"}[t.verdict]
        if not t.real:
            return "same"
        return "better" if (t.delta_pct < 0) == self.lower_is_better else "worse"

    def verdict(self, b_name: str) -> str:
        kind, t = self.kind(), self.test
        if t is None:
            return self.note
        if kind == "few":
            return f"too few samples to tell (n={t.n_a} vs {t.n_b})"
        if kind == "same":
            return "no real difference"
        if kind == "unclear":
            return "inconclusive: the rank test and the CI of the means disagree (outliers?)"
        delta = t.delta_pct if self.delta_pct is None else self.delta_pct
        return f"{b_name} {kind} by {abs(delta):.1f}%"


@dataclass
class ABPair:
    """Two jobs equal in every param but `param`: A (off / first value) and B."""

    param: str
    a: Row
    b: Row
    context: str
    metrics: list[ABMetric] = field(default_factory=list)

    @property
    def b_name(self) -> str:
        return f"{self.param}={fmt_value(self.b.get(self.param))}"

    def main(self) -> ABMetric:
        return self.metrics[0]


def ab_params(sweep: Sweep, requested: Iterable[str] = ()) -> list[str]:
    """The params to A/B: those asked for, plus every boolean param that varies."""
    auto = [p for p in varying_params(sweep)
            if all(isinstance(r.get(p), bool) for r in sweep.ok())]
    return list(dict.fromkeys([*requested, *auto]))


def _per_image(sweep: Sweep, row: Row) -> list[float] | None:
    s = sweep.samples.get(row.get("job_dir"))
    return [x / (row.get("batch") or 1) for x in s] if s else None


def _metric(sweep: Sweep, a: Row, b: Row, name: str, key: str, lower: bool,
            alpha: float, min_effect: float) -> ABMetric | None:
    va, vb = a.get(key), b.get(key)
    if va is None and vb is None:
        return None
    delta = 100 * (vb / va - 1) if va and vb is not None else None
    m = ABMetric(name, va, vb, delta, lower, note="single value: not tested")
    if (by_round := _by_round(a, b, key)) is not None:  # measured in rounds: paired by round
        m.test = compare_rounds(*by_round, alpha, min_effect)
    elif key == "infer_ms_per_img":
        sa, sb = _per_image(sweep, a), _per_image(sweep, b)
        if sa and sb:
            m.test = compare(sa, sb, alpha, min_effect)
        else:
            m.note = "no raw samples: not tested"
    return m


def _by_round(a: Row, b: Row, key: str) -> tuple[list[float], list[float]] | None:
    """Both jobs' values of `key` in the rounds both finished, when there are two or more."""
    ra, rb = rounds.values_of(a), rounds.values_of(b)
    if ra is None or rb is None:
        return None
    va, vb = rounds.paired(ra, rb, key)
    return (va, vb) if len(va) >= 2 else None


def noise_basis(sweep: Sweep) -> str:
    """Which variation the verdicts of this sweep rest on, in words."""
    counts = {len(v["rounds"]) for r in sweep.ok() if (v := rounds.values_of(r))}
    if counts:
        n = min(counts)
        return (f"Verdicts rest on the variation between rounds ({n} or more rounds, each pair "
                "of jobs compared round by round), so the machine's drift between jobs is in "
                "them.")
    return ("Verdicts rest on each job's own timing samples (one round): drift of the machine "
            "between jobs is not in them; measure in rounds (bench.rounds=3) to include it.")


def unsteady(row: Row, limit_pct: float | None = None) -> str:
    """Why a job's figure is too unsteady to call a lead beyond noise ('' when it is not)."""
    limit = limit_pct if limit_pct is not None else (
        row.get("bench.stable_cv_pct") or BenchConfig.stable_cv_pct)
    cv = row.get("infer_cv_pct")
    if isinstance(cv, int | float) and cv > limit:
        return f"its timing CV is {cv:.0f}% (> {limit:g}%)"
    if row.get("throttle") not in (None, "", "[]", []):
        return f"it throttled ({row['throttle']})"
    if (low := _num(row, "infer_ms_per_img_ci95_low")) is not None and low < 0:
        return "its timed calls scatter so much that their 95% CI reaches below zero"
    return ""


def ab_pairs(sweep: Sweep, param: str, alpha: float = ALPHA,
             min_effect: float = MIN_EFFECT_PCT) -> list[ABPair]:
    """Every matched pair for `param`: A is False (or the lowest value), B each other value.

    Jobs with wrong outputs take no part: a switch that breaks the outputs is not an option.
    """
    groups: dict[tuple, list[Row]] = {}
    for r in eligible(sweep.rows):
        groups.setdefault(config_key(r, sweep.params, lambda p: p == param), []).append(r)
    context_keys = [p for p in varying_params(sweep) if p != param]
    pairs = []
    for rows in groups.values():
        by_value = {}
        for r in rows:
            by_value.setdefault(_hashable(r.get(param)), r)
        values = sorted(by_value, key=lambda v: (str(type(v)), v if v is not None else ""))
        for v in values[1:]:
            pair = ABPair(param, by_value[values[0]], by_value[v],
                          label(by_value[v], context_keys))
            pair.metrics = [m for metric in AB
                            if (m := _metric(sweep, pair.a, pair.b, metric.title, metric.name,
                                             bool(metric.lower_is_better), alpha, min_effect))]
            pairs.append(pair)
    return pairs


def ab_summary(param: str, pairs: list[ABPair]) -> str:
    """How often the switch changed inference time, which way, over the matched pairs."""
    if not pairs:
        return f"No two finished jobs differ in {param} alone: nothing to compare."
    by_b: dict[str, list[ABPair]] = {}
    for p in pairs:
        by_b.setdefault(p.b_name, []).append(p)
    return " ".join(_summary_one(param, group) for group in by_b.values())


def _summary_one(param: str, pairs: list[ABPair]) -> str:
    kinds = [p.main().kind() for p in pairs]
    words = {"better": "better", "worse": "worse", "same": "no real difference",
             "unclear": "inconclusive", "few": "too few samples to tell",
             "untested": "not tested"}
    parts = [f"{kinds.count(k)} {w}" for k, w in words.items() if kinds.count(k)]
    a_name = f"{param}={fmt_value(pairs[0].a.get(param))}"
    return (f"{pairs[0].b_name} against {a_name}, inference time over {len(pairs)} matched "
            "pair(s): " + ", ".join(parts) + ".")


# --- best configuration ------------------------------------------------------------------


@dataclass
class Best:
    objective: str
    row: Row | None
    why: str


def _top(rows: list[Row], key: str, highest: bool) -> Row | None:
    rows = [r for r in rows if r.get(key) is not None]
    if not rows:
        return None
    return (max if highest else min)(rows, key=lambda r: r[key])


def best_configs(sweep: Sweep, latency: str = "infer_ms_p50",
                 max_latency_ms: float | None = None) -> list[Best]:
    """The winner of each objective among finished jobs whose outputs are not marked wrong;
    a sweep of serving jobs alone by what they measured (served qps, p99 per request), not by
    the offline figures of what may be the same model."""
    rows = eligible(sweep.rows)
    out = [] if serving_only(rows) else _offline_best(rows, latency, max_latency_ms)
    if any(r.get("server_qps") is not None for r in rows):
        out += [Best("highest served qps", _top(rows, "server_qps", True), "server_qps"),
                Best("lowest p99 per request", _top(rows, "latency_ms_p99", False),
                     "latency_ms_p99")]
        if max_latency_ms is not None and serving_only(rows):
            under = [r for r in rows if (_num(r, "latency_ms_p99") or math.inf) <= max_latency_ms]
            out.append(Best(f"highest served qps with p99 <= {max_latency_ms:g} ms",
                            _top(under, "server_qps", True), "server_qps"))
    if any(r.get("max_qps_at_slo") is not None for r in rows):
        out.append(Best("highest max_qps_at_slo", _top(rows, "max_qps_at_slo", True),
                        "max_qps_at_slo"))
    return out


def _offline_best(rows: list[Row], latency: str, max_latency_ms: float | None) -> list[Best]:
    lat = latency_name(latency)
    out = [Best("highest FPS", _top(rows, "fps", True), "fps"),
           Best(f"lowest latency ({lat})", _top(rows, latency, False), latency)]
    if max_latency_ms is not None:
        under = [r for r in rows if r.get(latency) is not None and r[latency] <= max_latency_ms]
        out.append(Best(f"highest FPS with {lat} <= {max_latency_ms:g} ms",
                        _top(under, "fps", True), "fps"))
    if any(r.get("e2e_fps") is not None for r in rows):
        out.append(Best("highest end-to-end FPS", _top(rows, "e2e_fps", True), "e2e_fps"))
    return out


def serving_only(rows: list[Row]) -> bool:
    """Every row a serving job's (and at least one)."""
    return bool(rows) and all(is_serving(r) for r in rows)


def front_keys(sweep: Sweep, latency: str = "infer_ms_p50") -> tuple[str, str]:
    """The (latency, rate) the Pareto front weighs: per request p99 against served qps for a
    sweep of serving jobs alone, else `latency` per batch call against FPS."""
    return ("latency_ms_p99", "server_qps") if serving_only(eligible(sweep.rows)) \
        else (latency, "fps")


def latency_name(key: str) -> str:
    """'infer_ms_p50' -> 'p50 per batch call'."""
    return f"{key.rsplit('_', 1)[-1]} per batch call"


def pareto_front(rows: list[Row], latency: str = "infer_ms_p50", rate: str = "fps") -> list[Row]:
    """Jobs no other job beats on both `latency` (lower; any cost: `energy_j_per_img` too) and
    `rate` (higher), by that cost."""
    rows = [r for r in eligible(rows) if r.get(latency) is not None and r.get(rate) is not None]
    front: list[Row] = []
    for r in sorted(rows, key=lambda r: (r[latency], -r[rate])):
        if not front or r[rate] > front[-1][rate]:
            front.append(r)
    return front


def throughput_key(rows: list[Row]) -> str:
    """`e2e_fps` when every candidate has it (files to answers is what gets deployed), else
    `fps`."""
    return "e2e_fps" if rows and all(r.get("e2e_fps") is not None for r in rows) else "fps"


def _lead(sweep: Sweep, best: Row, key: str, pool: list[Row] | None = None) -> str:
    """Whether the winner's lead over the runner-up (among `pool`, default every eligible job)
    is beyond noise: paired by round when measured in rounds, else per-image samples (fps)."""
    rest = [r for r in (eligible(sweep.rows) if pool is None else pool)
            if r is not best and r.get(key) is not None]
    if not rest:
        return ""
    second = max(rest, key=lambda r: r[key])
    gain = f"{100 * (best[key] / second[key] - 1):.1f}% {FPS_NAMES[key]}"
    name = label(second, varying_params(sweep))
    if (by_round := _by_round(second, best, key)) is not None:
        t = compare_rounds(*by_round)
        return (f"; its {gain} lead over the runner-up `{name}` holds round by round "
                f"({t.n_a} rounds, p={t.p_value:.2g})" if t.real else
                f"; its {gain} lead over `{name}` is within the variation between rounds "
                f"({t.n_a} rounds), so either will do")
    for row, who in ((best, "the winner"), (second, f"`{name}`")):
        if why := unsteady(row):
            if best[key] >= 2 * second[key]:  # too large to call noise, too unsteady to bound
                return (f"; it leads `{name}` by {gain}, but {who} was unsteady ({why}): "
                        "measure in rounds (bench.rounds=3) on a quiet machine to bound that lead")
            return (f"; its {gain} lead over `{name}` cannot be told from noise: {who} was "
                    f"unsteady ({why}); measure in rounds (bench.rounds=3) on a quiet machine")
    sa, sb = _per_image(sweep, second), _per_image(sweep, best)
    if key != "fps" or not (sa and sb):
        return (f"; it leads `{name}` by {gain} (one measurement each: measure in rounds, "
                "bench.rounds=3, to test that lead)")
    t = compare(sa, sb)
    return {"different": f"; its {gain} lead over the runner-up `{name}` is beyond noise",
            "too few samples": f"; its {gain} lead over `{name}` cannot be told from noise with "
                               f"{t.n_a} and {t.n_b} samples (time longer: bench.min_iters)",
            "inconclusive": f"; its {gain} lead over `{name}` is inconclusive (outliers?)",
            }.get(t.verdict, f"; its {gain} lead over `{name}` is within noise, so either will do")


FPS_NAMES = {"fps": "FPS", "e2e_fps": "end-to-end FPS", "server_qps": "served qps",
             "max_qps_at_slo": "max_qps_at_slo"}


def recommend(sweep: Sweep, latency: str = "infer_ms_p50",
              max_latency_ms: float | None = None, baseline: str = "torch") -> str:
    """One sentence: which configuration to deploy and why (offline throughput)."""
    rows = eligible(sweep.rows)
    if not rows:
        return "No configuration to deploy: " + _none_eligible(sweep)
    lat, key = latency_name(latency), throughput_key(rows)
    what = FPS_NAMES[key]
    if max_latency_ms is not None:
        rows = [r for r in rows if r.get(latency) is not None and r[latency] <= max_latency_ms]
        if not rows:
            fastest = _top(eligible(sweep.rows), latency, False)
            return (f"No configuration meets {lat} <= {max_latency_ms:g} ms; the quickest is "
                    f"`{deploy_label(sweep, fastest)}` ({fastest[latency]:.3g} ms).")
    best = _top(rows, key, True)
    bound = f" among those with {lat} <= {max_latency_ms:g} ms" if max_latency_ms is not None \
        else _agrees(rows)
    speed = f", {best['speedup_x']:.2f}x {baseline} in inference" if best.get("speedup_x") and \
        best.get("runtime") != baseline else ""
    return (f"Deploy `{deploy_label(sweep, best)}`: the highest {what} ({best[key]:,.1f}){bound}"
            f"{speed}, at {best[latency]:.3g} ms {lat}{_lead(sweep, best, key, rows)}.")


def _agrees(rows: list[Row]) -> str:
    """What of the jobs' outputs passed the check, by their task: boxes, masks or outputs."""
    if any(r.get("boxes_compared") is not None for r in rows):
        return " among jobs whose boxes agree with the reference's"
    if any(r.get("pixels_compared") is not None for r in rows):
        return " among jobs whose masks agree with the reference's"
    return " with outputs that pass the check"


def _none_eligible(sweep: Sweep) -> str:
    """Why no finished job may be recommended, in words."""
    shaken = [r for r in sweep.ok() if disturbed(r)]
    if shaken:
        return (f"no job finished with outputs that pass the check and figures that can be "
                f"right ({len(shaken)} disturbed: {disturbed(shaken[0])}).")
    return "no job finished with outputs that pass the check."


def _ms(value: float) -> str:
    """`6.2`, `1,939`: a latency without an exponent."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _energy(row: Row) -> str:
    """`, 0.12 J/image (energy_j_per_img)` where the job measured its energy (the device's;
    the CPU package's on a CPU); a serving job's at the load it reports (served_*), else its
    offline figure."""
    keys = ("energy_j_per_img", "cpu_energy_j_per_img")
    if is_serving(row):
        keys = ("served_j_per_img", "served_cpu_j_per_img", *keys)
    for key in keys:
        if (j := _num(row, key)) is not None:
            where = " at that load" if key.startswith("served") else ""
            return f", {j:.3g} J/image{where} ({key})"
    return ""


# --- serving: under an SLO, and served rate with its latency ---------------------------------


def is_serving(row: Row) -> bool:
    """A job of a serving scenario (server, concurrency, single_stream), not an offline one."""
    return row.get("scenario") not in (None, "offline")


def searched_slos(sweep: Sweep) -> list[float]:
    """The SLOs (scenario.slo_ms) the sweep's jobs searched under, smallest first."""
    return sorted({float(v) for r in sweep.rows if is_serving(r)
                   and (v := _num(r, "scenario.slo_ms")) is not None})


def _slo_text(row: Row, slo_ms: float) -> str:
    """`p99 <= 100 ms (its upper 95% bound)`: the job's own statement of its SLO."""
    if row.get("slo"):
        return str(row["slo"])
    q = _num(row, "scenario.slo_percentile") or 99.0
    return f"p{q:g} <= {slo_ms:g} ms (its upper 95% bound)"


def recommend_slo(sweep: Sweep, slo_ms: float) -> str:
    """One sentence: the configuration that serves the most requests per second under the SLO
    its jobs searched with (scenario=server scenario.slo_ms). A job that met no rate under it is
    never a candidate, whatever its offline figures."""
    searched = [r for r in sweep.rows if _num(r, "scenario.slo_ms") == slo_ms]
    rows = [r for r in eligible(searched) if r.get("max_qps_at_slo") is not None]
    if not rows:
        return _no_slo_winner(sweep, searched, slo_ms)
    best = _top(rows, "max_qps_at_slo", True)
    slo = _slo_text(best, slo_ms)
    q = _num(best, "scenario.slo_percentile") or 99.0
    lat = best.get(f"latency_ms_p{q:g}".replace(".", "")) or best.get("latency_ms_p99")
    at = f" at p{q:g} {_ms(lat)} ms" if lat is not None else ""
    offline = f"; offline {best['fps']:,.0f} img/s" if best.get("fps") else ""
    missed = [r for r in eligible(searched) if r.get("max_qps_at_slo") is None]
    left = (f"; {len(missed)} job(s) met no rate under it and are not candidates"
            if missed else "")
    return (f"Deploy `{deploy_label(sweep, best)}`: {best['max_qps_at_slo']:,.1f} qps{at}"
            f"{_energy(best)}, the highest max_qps_at_slo under {slo}{offline}"
            f"{_lead(sweep, best, 'max_qps_at_slo', rows)}{left}.")


def _no_slo_winner(sweep: Sweep, searched: list[Row], slo_ms: float) -> str:
    """No job to recommend under the SLO: none searched it, or none met any rate."""
    tried = eligible(searched)
    if not tried:
        return (f"No job of this sweep searched under scenario.slo_ms={slo_ms:g} with outputs "
                f"that pass the check and figures that can be right: run python -m sweep -m "
                f"scenario=server scenario.slo_ms={slo_ms:g} ... to find the highest rate "
                "under it.")
    why = next((str(r["slo_result"]) for r in tried if r.get("slo_result")), "")
    return (f"Deploy none under {_slo_text(tried[0], slo_ms)}: none of the {len(tried)} "
            f"configuration(s) met it at any rate tried" + (f" ({why})" if why else "") +
            "; relax scenario.slo_ms, or try a smaller batch or scenario.max_queue_delay_ms=0.")


KNEE_PCT = 5.0  # serving: configurations this close to the highest served qps are as good on it


def recommend_serving(sweep: Sweep, max_p99_ms: float | None = None) -> str:
    """One sentence for serving jobs without an SLO (concurrency, server at a target rate):
    chosen by what they measured, served qps and per-request p99, never by offline FPS. With
    `max_p99_ms`: the highest served qps within it; without: the lowest p99 among the
    configurations within KNEE_PCT of the highest served qps (more clients past the knee add
    only latency)."""
    rows = [r for r in eligible(sweep.rows) if is_serving(r)
            and r.get("server_qps") is not None and r.get("latency_ms_p99") is not None]
    if not rows:
        over = [r for r in sweep.ok() if is_serving(r) and r.get("overloaded")]
        why = f" ({len(over)} overloaded: {over[0]['overloaded']})" if over else ""
        return ("No serving configuration to deploy: no serving job measured a served rate "
                f"with its latency and figures that can be right{why}.")
    if max_p99_ms is not None:
        under = [r for r in rows if r["latency_ms_p99"] <= max_p99_ms]
        if not under:
            quickest = _top(rows, "latency_ms_p99", False)
            return (f"No serving configuration meets p99 <= {max_p99_ms:g} ms; the quickest is "
                    f"`{deploy_label(sweep, quickest)}` (p99 "
                    f"{_ms(quickest['latency_ms_p99'])} ms at {quickest['server_qps']:,.1f} qps).")
        best = _top(under, "server_qps", True)
        return (f"Deploy `{deploy_label(sweep, best)}`: {best['server_qps']:,.1f} qps served at "
                f"p99 {_ms(best['latency_ms_p99'])} ms{_energy(best)}, the highest served qps "
                f"(server_qps) with p99 <= {max_p99_ms:g} ms"
                f"{_lead(sweep, best, 'server_qps', under)}.")
    top = _top(rows, "server_qps", True)
    near = [r for r in rows if r["server_qps"] >= top["server_qps"] * (1 - KNEE_PCT / 100)]
    best = _top(near, "latency_ms_p99", False)
    peak = "" if best is top else (
        f"; the highest, {top['server_qps']:,.1f} qps by `{label(top, varying_params(sweep))}`,"
        f" costs p99 {_ms(top['latency_ms_p99'])} ms")
    why = (f"the lowest p99 among the configurations within {KNEE_PCT:g}% of the highest served "
           f"qps (server_qps){peak}" if len(near) > 1 else
           f"the highest served qps (server_qps), no other within {KNEE_PCT:g}% of it")
    return (f"Deploy `{deploy_label(sweep, best)}`: {best['server_qps']:,.1f} qps served at "
            f"p99 {_ms(best['latency_ms_p99'])} ms{_energy(best)}, {why}; no latency bound given "
            "(--max-latency-ms bounds p99).")


def _subsweep(sweep: Sweep, rows: list[Row]) -> Sweep:
    return Sweep(sweep.name, rows, sweep.params, sweep.samples, sweep.source)


def recommendation(sweep: Sweep, latency: str = "infer_ms_p50",
                   max_latency_ms: float | None = None, baseline: str = "torch",
                   slo_ms: float | None = None) -> str:
    """The answer to the question the sweep asked: under the SLO its jobs searched with (or
    `slo_ms`), by served qps and p99 for serving jobs without one, else by offline throughput.
    A sweep of both offline and serving jobs gets one sentence for each."""
    if slo_ms is not None:
        return recommend_slo(sweep, slo_ms)
    if slos := searched_slos(sweep):
        return " ".join(recommend_slo(sweep, s) for s in slos)
    serving = [r for r in sweep.rows if is_serving(r)]
    if not serving:
        return recommend(sweep, latency, max_latency_ms, baseline)
    text = recommend_serving(_subsweep(sweep, serving), max_latency_ms)
    offline = [r for r in sweep.rows if not is_serving(r)]
    if any(r.get("status") == "ok" for r in offline):
        first = recommend(_subsweep(sweep, offline), latency, max_latency_ms, baseline)
        text = f"Offline: {first} Serving: {text}"
    return text
