"""Load a finished sweep into one shape, whatever it was stored in: job folders, summary.csv, or
MLflow (the children of a parent run).

A :class:`Sweep` holds flat rows (params, info and metrics under their own names, the same names
in every source), which row keys are config params, and the raw timing samples per job.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.result import RESULT_FILE, SAMPLES_FILE

PARAM_PREFIXES = ("runtime", "model", "hardware", "data", "pipeline", "flags", "bench", "check",
                  "tracking")
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


def job_order(name: str) -> tuple[int, str]:
    """Hydra's job number first (`12_torch-...`), then the name."""
    head = name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, name)


def to_row(result: dict[str, Any], job_dir: str) -> dict[str, Any]:
    """One flat row from a result.json: params, then info not already named, then metrics."""
    row: dict[str, Any] = {"job_dir": job_dir, "job": result["job"], "status": result["status"],
                           "error": result.get("error")}
    row.update(result.get("params", {}))
    row.update({k: v for k, v in result.get("info", {}).items() if k not in row})
    row.update(_finite(result.get("metrics", {})))
    return row


def _job_dirs(sweep_dir: Path) -> list[Path]:
    found = [p for p in sweep_dir.iterdir() if (p / RESULT_FILE).is_file()]
    return sorted(found, key=lambda p: job_order(p.name))


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One flat row per job folder that holds a result.json."""
    return [to_row(json.loads((d / RESULT_FILE).read_text()), d.name) for d in _job_dirs(sweep_dir)]


def read_samples(path: Path) -> list[float] | None:
    """The per-call times (ms per batch) of a samples.json, or None when absent or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    samples = data.get("samples_ms") if isinstance(data, dict) else None
    return [float(s) for s in samples] if samples else None


def _union(keys: Iterator[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def load_dir(sweep_dir: Path) -> Sweep:
    """A multirun folder: result.json and samples.json of every job folder."""
    sweep_dir = Path(sweep_dir)
    rows, params, samples = [], [], {}
    for d in _job_dirs(sweep_dir):
        result = json.loads((d / RESULT_FILE).read_text())
        rows.append(to_row(result, d.name))
        params.extend(result.get("params", {}))
        if (s := read_samples(d / SAMPLES_FILE)) is not None:
            samples[d.name] = s
    info = _sweep_file(sweep_dir)
    return Sweep(sweep_name(sweep_dir), rows, _union(iter(params)), samples, str(sweep_dir),
                 info.get("parent_run_id"), info.get("tracking_uri"))


def sweep_name(sweep_dir: Path) -> str:
    """multirun/2026-11-23/18-00-00 -> sweep-2026-11-23_18-00-00 (the parent run's name)."""
    return f"sweep-{sweep_dir.parent.name}_{sweep_dir.name}"


def _sweep_file(sweep_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((sweep_dir / "sweep.json").read_text())
    except (OSError, ValueError):
        return {}


def guess_params(columns: list[str]) -> list[str]:
    """Config params among column names, by the config's group names (for a bare CSV)."""
    return [c for c in columns if c in PARAM_KEYS or c.split(".", 1)[0] in PARAM_PREFIXES]


def load_csv(path: Path) -> Sweep:
    """A summary.csv (and, when beside it, summary.json's param list and the job folders' samples)."""
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


# --- MLflow -------------------------------------------------------------------------------


@contextlib.contextmanager
def tracking_uri(uri: str | None) -> Iterator[None]:
    """Point mlflow's fluent API at `uri` for a while, then back."""
    import mlflow

    before = mlflow.get_tracking_uri()
    if uri:
        mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def latest_parent_id(experiment: str) -> str:
    """The run id of the experiment's most recent sweep (parent run)."""
    import mlflow

    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list", max_results=1,
                              filter_string="tags.`sweep.role` = 'parent'",
                              order_by=["attributes.start_time DESC"])
    if not runs:
        raise LookupError(f"experiment {experiment!r} holds no sweep (no run tagged "
                          "sweep.role=parent); run one with python -m sweep -m ...")
    return runs[0].info.run_id


def child_runs(experiment: str, parent_id: str):
    """The jobs of one sweep as mlflow.search_runs' DataFrame."""
    import mlflow

    return mlflow.search_runs(experiment_names=[experiment],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def row_from_run(run: dict[str, Any]) -> dict[str, Any]:
    """One flat row from one record of mlflow.search_runs' DataFrame (same names as to_row)."""
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


def sweep_from_runs(runs, name: str = "", with_samples: bool = True,
                    uri: str | None = None) -> Sweep:
    """A Sweep from mlflow.search_runs' DataFrame of child runs; samples from their artifacts."""
    records = runs.to_dict("records") if hasattr(runs, "to_dict") else list(runs)
    rows = sorted((row_from_run(r) for r in records), key=lambda r: job_order(r["job_dir"]))
    params = sorted({k[7:] for r in records for k, v in r.items()
                     if k.startswith("params.") and _present(v)})
    samples = {}
    if with_samples:
        finished = [r for r in rows if r.get("status") == "ok"]
        samples = {r["job_dir"]: s for r in finished
                   if (s := _run_samples(r["mlflow_run_id"], uri)) is not None}
    return Sweep(name, rows, params, samples, "mlflow", tracking_uri=uri)


def _run_samples(run_id: str, uri: str | None) -> list[float] | None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SAMPLES_FILE,
                                                       dst_path=tmp, tracking_uri=uri)
        except Exception:  # no samples (a failed job): nothing to test
            return None
        return read_samples(Path(path))


def load_experiment(experiment: str, parent_id: str | None = None, uri: str | None = None,
                    with_samples: bool = True) -> Sweep:
    """The children of `parent_id` (default: the experiment's latest sweep) as a Sweep."""
    import mlflow

    with tracking_uri(uri):
        parent_id = parent_id or latest_parent_id(experiment)
        parent = mlflow.get_run(parent_id)
        runs = child_runs(experiment, parent_id)
        sweep = sweep_from_runs(runs, parent.info.run_name or parent_id, with_samples,
                                uri or mlflow.get_tracking_uri())
    sweep.parent_run_id = parent_id
    return sweep
