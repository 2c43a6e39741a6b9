"""Load a finished sweep into one shape, whatever it was stored in: job folders, summary.csv, or
a tracking store's runs (the children of a parent run, read by sweep.tracking).

A :class:`Sweep` holds flat rows (params, info and metrics under their own names, the same names
in every source), which row keys are config params, and the raw timing samples per job.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.result import (
    SAMPLES_FILE,
    CorruptResultError,
    SweepRecord,
    job_dirs,
    job_order,
    read_result,
    read_samples,
    sweep_name,
)

PARAM_PREFIXES = ("runtime", "model", "hardware", "data", "pipeline", "scenario", "flags", "bench",
                  "check", "tracking")
PARAM_KEYS = {"resolution", "batch", "precision", "device", "cache_dir"}
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


@dataclass
class Sweep:
    """A sweep's rows, the names of its config params and raw samples (ms per batch) per job."""

    name: str
    rows: list[dict[str, Any]]
    params: list[str]
    samples: dict[str, list[float]] = field(default_factory=dict)
    source: str = ""
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    corrupt: list[str] = field(default_factory=list)  # why each unreadable result.json is so

    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status") == "ok"]


def coerce(text: Any) -> Any:
    """'32' -> 32, '0.5' -> 0.5, 'True' -> True, 'None' -> None; other strings unchanged.

    MLflow params and tags and CSV cells are strings; this restores what result.json holds.
    """
    if not isinstance(text, str):
        return text
    if text in ("True", "False", "true", "false"):
        return text.lower() == "true"
    if text == "None":
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    """Drop missing and non-finite metrics (MLflow does not store them either)."""
    return {k: v for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(v)}


def to_row(result: dict[str, Any], job_dir: str) -> dict[str, Any]:
    """One flat row from a result.json: params, then info not already named, then metrics."""
    row: dict[str, Any] = {"job_dir": job_dir, "job": result["job"], "status": result["status"],
                           "error": result.get("error")}
    row.update(result.get("params", {}))
    row.update({k: v for k, v in result.get("info", {}).items() if k not in row})
    row.update(_finite(result.get("metrics", {})))
    return row


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One flat row per job folder that holds a result.json."""
    return load_dir(sweep_dir).rows


def _unreadable_row(job_dir: Path, reason: str) -> dict[str, Any]:
    """A corrupt result.json counts as a failed job, named by its folder, with the reason."""
    return {"job_dir": job_dir.name, "job": job_dir.name, "status": "failed", "error": reason}


def _union(keys: Iterator[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def load_dir(sweep_dir: Path) -> Sweep:
    """A multirun folder: result.json and samples.json of every job folder."""
    sweep_dir = Path(sweep_dir)
    rows, params, samples, corrupt = [], [], {}, []
    for d in job_dirs(sweep_dir):
        try:
            result = read_result(d)
        except (CorruptResultError, OSError) as e:
            corrupt.append(str(e))
            rows.append(_unreadable_row(d, str(e)))
            continue
        rows.append(to_row(result, d.name))
        params.extend(result.get("params", {}))
        if (s := read_samples(d / SAMPLES_FILE)) is not None:
            samples[d.name] = s
    record = SweepRecord.read(sweep_dir)
    return Sweep(sweep_name(sweep_dir), rows, _union(iter(params)), samples, str(sweep_dir),
                 record.parent_run_id, record.tracking_uri, corrupt)


def guess_params(columns: list[str]) -> list[str]:
    """Config params among column names, by the config's group names (for a bare CSV)."""
    return [c for c in columns if c in PARAM_KEYS or c.split(".", 1)[0] in PARAM_PREFIXES]


def load_csv(path: Path) -> Sweep:
    """A summary.csv (and, when beside it, summary.json's param list and the job folders'
    samples)."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [{k: coerce(v) for k, v in r.items() if v != ""} for r in reader]
        columns = list(reader.fieldnames or [])
    params = _summary_params(path.with_name("summary.json")) or guess_params(columns)
    samples = {}
    for r in rows:
        s = read_samples(path.parent / str(r.get("job_dir")) / SAMPLES_FILE)
        if s is not None:
            samples[r["job_dir"]] = s
    return Sweep(sweep_name(path.parent), rows, params, samples, str(path))


def _summary_params(path: Path) -> list[str]:
    try:
        return list(json.loads(path.read_text()).get("params", []))
    except (OSError, ValueError):
        return []


# --- a tracking store's runs (sweep.tracking reads them) ------------------------------------


# what a tracking store holds for another choice's option (runtime.opset on a torch run), so
# that every child run has the same params; read back as absent, as in the job folder
NOT_APPLICABLE = "n/a"


def _present(value: Any) -> bool:
    return value is not None and value != NOT_APPLICABLE and not (
        isinstance(value, float) and math.isnan(value))


def row_from_run(run: dict[str, Any]) -> dict[str, Any]:
    """One flat row from one run record (mlflow.search_runs' DataFrame shape: `params.x`,
    `tags.x`, `metrics.x`, `run_id`), with the same names as to_row."""
    job_dir = run.get("tags.sweep.job_dir") or run.get("tags.mlflow.runName") or run["run_id"]
    row: dict[str, Any] = {"job_dir": Path(str(job_dir)).name,
                           "job": run.get("tags.mlflow.runName"),
                           "status": run.get("tags.sweep.status"),
                           "error": run.get("tags.sweep.error") if _present(
                               run.get("tags.sweep.error")) else None}
    for prefix in ("params.", "tags.info."):
        row.update({k[len(prefix):]: coerce(v) for k, v in run.items()
                    if k.startswith(prefix) and _present(v) and k[len(prefix):] not in row})
    row["mlflow_run_id"] = run["run_id"]
    row.update(_finite({k[8:]: v for k, v in run.items() if k.startswith("metrics.")}))
    return row


def sweep_from_runs(runs: Any, name: str = "", samples: dict[str, list[float]] | None = None,
                    uri: str | None = None) -> Sweep:
    """A Sweep from the child runs of a parent (records, or mlflow.search_runs' DataFrame);
    `samples` by run id."""
    records = runs.to_dict("records") if hasattr(runs, "to_dict") else list(runs)
    rows = sorted((row_from_run(r) for r in records), key=lambda r: job_order(r["job_dir"]))
    params = sorted({k[7:] for r in records for k, v in r.items()
                     if k.startswith("params.") and _present(v)})
    by_dir = {r["job_dir"]: (samples or {})[r["mlflow_run_id"]] for r in rows
              if r["mlflow_run_id"] in (samples or {})}
    return Sweep(name, rows, params, by_dir, "mlflow", tracking_uri=uri)
