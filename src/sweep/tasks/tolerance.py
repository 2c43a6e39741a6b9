"""How far each task's outputs may stray from the fp32 reference, per precision: one table.

fp32 is strict (only reduction order differs between runtimes), tf32/fp16 looser, bf16 looser
still (8 bits of mantissa), int8 loosest. Agreement metrics are judged only when something was
compared (`counted_by` > 0); otherwise the check passes but says it was not decisive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sweep.accuracy import TOLERANCE as CLASSIFY  # the classifier's rules stay where they are

PRECISIONS = tuple(CLASSIFY)


@dataclass(frozen=True)
class Rule:
    at_least: dict[str, float] = field(default_factory=dict)
    at_most: dict[str, float] = field(default_factory=dict)
    counted_by: str = ""  # the metric counting what was compared; "" = always judged
    judged_if_counted: tuple[str, ...] = ()  # metrics not judged when nothing was compared


def _detect(agree: float, iou: float, extra: float) -> Rule:
    return Rule(at_least={"box_agreement_pct": agree, "box_iou_mean": iou},
                at_most={"box_extra_pct": extra}, counted_by="boxes_compared",
                judged_if_counted=("box_agreement_pct", "box_iou_mean"))


def _segment(agree: float) -> Rule:
    return Rule(at_least={"mask_agreement_pct": agree}, counted_by="pixels_compared",
                judged_if_counted=("mask_agreement_pct",))


def _raw(rel: float, cosine: float) -> Rule:
    return Rule(at_least={"cosine_min": cosine}, at_most={"rel_err": rel})


TOLERANCE: dict[str, dict[str, Rule]] = {
    "classify": {p: Rule(at_least={"agreement_top1_pct": agree}, at_most={"rel_err": rel},
                         counted_by="decisive_pct", judged_if_counted=("agreement_top1_pct",))
                 for p, (rel, agree, _margin) in CLASSIFY.items()},
    "detect": {"fp32": _detect(98.0, 0.97, 2.0), "tf32": _detect(95.0, 0.93, 5.0),
               "fp16": _detect(90.0, 0.88, 10.0), "bf16": _detect(80.0, 0.78, 20.0),
               "int8": _detect(60.0, 0.55, 40.0)},
    "segment": {"fp32": _segment(99.5), "tf32": _segment(98.0), "fp16": _segment(98.0),
                "bf16": _segment(95.0), "int8": _segment(85.0)},
    "raw": {"fp32": _raw(5e-3, 0.9999), "tf32": _raw(5e-2, 0.999), "fp16": _raw(5e-2, 0.999),
            "bf16": _raw(4e-1, 0.99), "int8": _raw(1.5, 0.9)},
}


def rule(task: str, precision: str) -> Rule:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} has no tolerance; use one of "
                         f"{', '.join(PRECISIONS)}")
    return TOLERANCE[task][precision]


def judge(metrics: dict[str, float], r: Rule, precision: str) -> tuple[bool, str]:
    """Whether `metrics` satisfy rule `r`, and why in one line."""
    counted = metrics.get(r.counted_by, 1.0) if r.counted_by else 1.0
    skip = set(r.judged_if_counted) if not counted > 0 else set()
    problems = []
    for name, bound in r.at_least.items():
        value = metrics.get(name, math.nan)
        if name not in skip and not value >= bound:  # nan fails
            problems.append(f"{name} {value:.4g} (needs >= {bound:g} for {precision})")
    for name, bound in r.at_most.items():
        value = metrics.get(name, math.nan)
        if name not in skip and not value <= bound:
            problems.append(f"{name} {value:.4g} (allowed <= {bound:g} for {precision})")
    if problems:
        return False, "; ".join(problems)
    if skip:
        return True, (f"within tolerance (not decisive: {r.counted_by}=0, so "
                      f"{', '.join(sorted(skip))} not judged)")
    return True, "within tolerance"
