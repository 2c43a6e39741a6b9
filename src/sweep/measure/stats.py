"""Summary statistics of timing samples, and percentiles with their order-statistic bounds."""

from __future__ import annotations

import math
import statistics

import numpy as np

# two-sided 95% Student t quantiles for small samples; the normal 1.96 beyond
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 60: 2.000,
        120: 1.980}


def t95(df: int) -> float:
    if df <= 0:
        return math.nan
    for k in sorted(_T95):
        if df <= k:
            return _T95[k]
    return 1.96


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100] (numpy's default method)."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def latency_stats(samples_ms: list[float], batch: int, span_s: float) -> dict[str, float]:
    """Per-batch latency percentiles and spread, per-image mean with its 95% CI, throughput.

    `fps` is images over the span of all timed calls (gaps between calls included); the
    per-image mean is the mean call time divided by the batch.
    """
    n = len(samples_ms)
    mean = statistics.fmean(samples_ms)
    sd = statistics.stdev(samples_ms) if n > 1 else 0.0
    half = t95(n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
    return {
        "infer_ms_per_img": mean / batch,
        "infer_ms_per_img_ci95_low": (mean - half) / batch,
        "infer_ms_per_img_ci95_high": (mean + half) / batch,
        "infer_ms_mean": mean,
        "infer_ms_p50": percentile(samples_ms, 50),
        "infer_ms_p90": percentile(samples_ms, 90),
        "infer_ms_p99": percentile(samples_ms, 99),
        "infer_ms_min": min(samples_ms),
        "infer_cv_pct": 100 * sd / mean if mean > 0 else math.nan,
        "infer_iters": float(n),
        "fps": n * batch / span_s if span_s > 0 else math.nan,
    }


def percentile_bounds(sorted_ms: np.ndarray, q: float) -> tuple[float, float | None, float | None]:
    """The q-th percentile and its 95% distribution-free bounds from order statistics: ranks
    from the binomial(n, q/100) quantiles, as LoadGen's early stopping does. A bound that would
    need more samples than there are is None."""
    from scipy.stats import binom

    n = len(sorted_ms)
    point = float(np.percentile(sorted_ms, q))
    lo_rank = int(binom.ppf(0.025, n, q / 100))  # 1-based rank of the lower bound
    hi_rank = int(binom.ppf(0.975, n, q / 100)) + 1
    low = float(sorted_ms[lo_rank - 1]) if lo_rank >= 1 else None
    high = float(sorted_ms[hi_rank - 1]) if hi_rank <= n else None
    return point, low, high


def requests_for_bound(q: float) -> int:
    """The fewest requests for which the q-th percentile has an upper 95% bound."""
    from scipy.stats import binom

    n = 10
    while int(binom.ppf(0.975, n, q / 100)) + 1 > n:
        n = math.ceil(n * 1.1)
    return n
