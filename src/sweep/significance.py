"""Is B really different from A? Two independent sets of timing samples, or, when the jobs
were measured in rounds, their values paired by round.

Two checks look at the samples: the Mann-Whitney U rank test (exact when small and untied,
normal approximation with tie correction otherwise) and a percentile-bootstrap 95% CI of the
relative difference of means. A difference is real when both say so and it is at least
`min_effect_pct` (with thousands of samples every 0.1% drift is "significant" and none of it
matters); there is no real difference when neither says so or when it is smaller than that; when
they disagree (a few outliers move the mean but not the ranks, or the reverse) it is
inconclusive. With too few samples for the rank test ever to reach `alpha`, it says so.

Samples from within one job say nothing of the machine's drift between jobs (clocks, other
load), which can be far larger than a job's own spread. Measured in rounds (`bench.rounds`),
each round holds both jobs, so `compare_rounds` tests the per-round ratio B/A: a drift that
moves both jobs of a round alike cancels in it (a paired t-test on log ratios).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

ALPHA = 0.05
MIN_EFFECT_PCT = 1.0
BOOTSTRAP = 2000


@dataclass
class Comparison:
    """B against A: delta % of the means with its 95% CI, the U test's p, the verdict."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    delta_pct: float
    ci_low_pct: float
    ci_high_pct: float
    p_value: float
    verdict: str  # "different" | "no real difference" | "inconclusive" | "too few samples"
    basis: str = "samples"  # "samples": within-job timing samples; "rounds": paired by round

    @property
    def real(self) -> bool:
        return self.verdict == "different"


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_vals = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2
    return ranks


@lru_cache(maxsize=4096)
def _u_counts(m: int, n: int) -> tuple[int, ...]:
    """How many arrangements of m A's and n B's give each value of U (0..m*n)."""
    if m == 0 or n == 0:
        return (1,)
    left, right = _u_counts(m - 1, n), _u_counts(m, n - 1)
    counts = [0] * (m * n + 1)
    for u, c in enumerate(left):
        counts[u + n] += c
    for u, c in enumerate(right):
        counts[u] += c
    return tuple(counts)


def _exact_p(u: float, m: int, n: int) -> float:
    counts = _u_counts(m, n)
    total = math.comb(m + n, m)
    k = int(round(u))
    low, high = sum(counts[: k + 1]), sum(counts[k:])
    return min(1.0, 2 * min(low, high) / total)


def _normal_p(u: float, m: int, n: int, ranks: np.ndarray) -> float:
    _, tie_sizes = np.unique(ranks, return_counts=True)
    tie = float(np.sum(tie_sizes**3 - tie_sizes))
    big = m + n
    var = m * n / 12 * ((big + 1) - tie / (big * (big - 1)))
    if var <= 0:
        return 1.0
    z = (abs(u - m * n / 2) - 0.5) / math.sqrt(var)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def mann_whitney_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the Mann-Whitney U test of a against b."""
    m, n = len(a), len(b)
    ranks = rankdata(np.concatenate([a, b]))
    u = float(ranks[:m].sum() - m * (m + 1) / 2)
    untied = len(np.unique(ranks)) == m + n
    if untied and m + n <= 50:
        return _exact_p(u, m, n)
    return _normal_p(u, m, n, ranks)


def min_p(m: int, n: int) -> float:
    """The smallest two-sided p the U test can give with m and n samples."""
    return min(1.0, 2 / math.comb(m + n, m))


def _boot_means(x: np.ndarray, rng: np.random.Generator, reps: int) -> np.ndarray:
    chunk = max(1, 2_000_000 // len(x))
    out = [x[rng.integers(0, len(x), (min(chunk, reps - i), len(x)))].mean(axis=1)
           for i in range(0, reps, chunk)]
    return np.concatenate(out)


def bootstrap_delta_ci(a: np.ndarray, b: np.ndarray, reps: int = BOOTSTRAP,
                       seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap CI of 100 * (mean(b) / mean(a) - 1)."""
    rng = np.random.default_rng(seed)
    ratio = _boot_means(b, rng, reps) / _boot_means(a, rng, reps)
    low, high = np.percentile(100 * (ratio - 1), [2.5, 97.5])
    return float(low), float(high)


def compare(a: list[float], b: list[float], alpha: float = ALPHA,
            min_effect_pct: float = MIN_EFFECT_PCT) -> Comparison:
    """Compare sample sets a (the reference) and b; see the module docstring for the rule."""
    xa, xb = np.asarray(a, float), np.asarray(b, float)
    mean_a, mean_b = float(xa.mean()), float(xb.mean())
    delta = 100 * (mean_b / mean_a - 1)
    low, high = bootstrap_delta_ci(xa, xb)
    p = mann_whitney_p(xa, xb)
    return Comparison(len(xa), len(xb), mean_a, mean_b, delta, low, high, p,
                      _verdict(p, low, high, delta, min_p(len(xa), len(xb)), alpha, min_effect_pct))


def _verdict(p: float, low: float, high: float, delta: float, smallest_p: float, alpha: float,
             min_effect_pct: float) -> str:
    ranks, means = p < alpha, low > 0 or high < 0
    if smallest_p > alpha:
        return "too few samples"
    if abs(delta) < min_effect_pct or not (ranks or means):
        return "no real difference"
    return "different" if ranks and means else "inconclusive"


def compare_rounds(a: list[float], b: list[float], alpha: float = ALPHA,
                   min_effect_pct: float = MIN_EFFECT_PCT) -> Comparison:
    """B against A from values paired by round (a[i] and b[i] measured in round i): a t-test and
    a t CI of the mean log ratio log(b/a). Different when p < alpha and the effect is at least
    `min_effect_pct`; fewer than two rounds are too few."""
    from scipy import stats

    xa, xb = np.asarray(a, float), np.asarray(b, float)
    n = len(xa)
    mean_a, mean_b = float(xa.mean()), float(xb.mean())
    if n < 2:
        return Comparison(n, n, mean_a, mean_b, 100 * (mean_b / mean_a - 1), math.nan, math.nan,
                          math.nan, "too few samples", "rounds")
    d = np.log(xb / xa)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        p, half = (0.0 if mean != 0 else 1.0), 0.0
    else:
        se = sd / math.sqrt(n)
        p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
        half = float(stats.t.ppf(0.975, n - 1)) * se
    delta = 100 * (math.exp(mean) - 1)
    low, high = 100 * (math.exp(mean - half) - 1), 100 * (math.exp(mean + half) - 1)
    real = p < alpha and abs(delta) >= min_effect_pct
    return Comparison(n, n, mean_a, mean_b, delta, low, high, p,
                      "different" if real else "no real difference", "rounds")


def ci95_log(values: list[float]) -> tuple[float, float] | None:
    """95% CI of a rate's geometric mean, from a t interval on the log values, exponentiated:
    both bounds positive and the interval skewed as a rate's spread is (a round at half speed
    weighs as much as one at double). None below two values or when any is not positive (no
    log: the caller has no rate to bound)."""
    from scipy import stats

    x = np.asarray(values, float)
    if len(x) < 2 or not np.all(np.isfinite(x)) or np.any(x <= 0):
        return None
    logs = np.log(x)
    half = float(stats.t.ppf(0.975, len(x) - 1)) * float(logs.std(ddof=1)) / math.sqrt(len(x))
    mean = float(logs.mean())
    return math.exp(mean - half), math.exp(mean + half)
