"""A job measured in rounds (`bench.rounds=N`): each round's record, and the job's result built
from them: the median of every metric over the rounds as the headline, a between-round 95% CI
of the headline figures, and their per-round values (for the paired A/B by round).

The records live in the job folder's rounds file (`sweep.result.ROUNDS_FILE`), so a resumed
sweep keeps the rounds already done; result.json always holds the combination so far.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from sweep.metrics import ROUND_METRICS
from sweep.result import JobResult, read_rounds, write_rounds
from sweep.significance import ci95_log

VALUES_KEY = "round_values"  # info: JSON {metric: [value per round, by round number]}


def of_config(job_dir: Path, digest: str) -> list[dict[str, Any]]:
    """The job folder's round records of this config (a damaged file is named, and what it
    held measured again: `sweep.result.read_rounds`)."""
    return [r for r in read_rounds(job_dir) if r["digest"] == digest]


def record(job_dir: Path, round_no: int, digest: str, result: JobResult,
           records: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Add (or replace) this round's record among `records` (this config's, read from the
    folder when not given); all records of this config, by round."""
    if records is None:
        records = of_config(job_dir, digest)
    kept = [r for r in records if r["round"] != round_no]
    kept.append({"round": round_no, "digest": digest, "status": result.status,
                 "error": result.error, "metrics": result.metrics, "started": result.started,
                 "duration_s": result.duration_s})
    kept.sort(key=lambda r: r["round"])
    write_rounds(job_dir, kept)
    return kept


def done(records: list[dict[str, Any]]) -> set[int]:
    """The rounds among `records` that finished."""
    return {r["round"] for r in records if r["status"] == "ok"}


def covers(result: JobResult, saved: dict[str, Any]) -> bool:
    """Whether `result` (a combination) accounts for every round the `saved` result of the same
    config had finished: only then may it replace that result in the folder, so a lost or
    damaged rounds file never turns a finished result into one round's figures."""
    had = set(saved.get("info", {}).get("rounds_done") or [])
    now = set(result.info.get("rounds_done", [])) | {int(r) for r in
                                                      result.info.get("rounds_failed", {})}
    return had <= now


def combine(latest: JobResult, records: list[dict[str, Any]], rounds: int) -> JobResult:
    """The job's result over its rounds: `latest` (the round just run, for params, info and
    env) with every metric replaced by its median over the finished rounds."""
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]
    out = JobResult(**{**latest.to_json(), "info": dict(latest.info)})
    out.info["rounds_done"] = [r["round"] for r in ok]
    out.info["rounds_planned"] = rounds
    if failed:
        out.info["rounds_failed"] = {str(r["round"]): r.get("error") for r in failed}
    if not ok:
        return out  # every round failed: the latest one's failure stands
    out.status, out.error = "ok", None
    names = dict.fromkeys(k for r in ok for k in r["metrics"])
    metrics: dict[str, float] = {}
    for name in names:
        values = [r["metrics"][name] for r in ok if _finite(r["metrics"].get(name))]
        if values:
            metrics[name] = statistics.median(values)
    values = {name: [r["metrics"].get(name) for r in ok] for name in ROUND_METRICS
              if all(_finite(r["metrics"].get(name)) for r in ok)}
    for name, vals in values.items():
        if (band := ci95_log(vals)) is not None:  # every one is positive: never below 0
            metrics[f"{name}_rounds_ci95_low"], metrics[f"{name}_rounds_ci95_high"] = band
    metrics["rounds"] = float(len(ok))
    out.metrics = metrics
    # by round number, so two jobs' values pair by the round they were measured in
    out.info[VALUES_KEY] = json.dumps({"rounds": [r["round"] for r in ok], **values})
    return out


def values_of(row: dict[str, Any]) -> dict[str, Any] | None:
    """The per-round values a result row carries (from result.json or an MLflow tag)."""
    raw = row.get(VALUES_KEY)
    if not raw:
        return None
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("rounds") else None


def paired(a: dict[str, Any], b: dict[str, Any], name: str) -> tuple[list[float], list[float]]:
    """Two jobs' values of `name` in the rounds both finished, in round order."""
    va = dict(zip(a["rounds"], a.get(name) or [], strict=False))
    vb = dict(zip(b["rounds"], b.get(name) or [], strict=False))
    common = sorted(set(va) & set(vb))
    return [va[r] for r in common], [vb[r] for r in common]


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)
