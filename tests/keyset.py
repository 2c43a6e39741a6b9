"""The names a small sweep writes (result.json keys, summary columns, MLflow params, metrics and
tags), so that a redesign can be checked to leave them unchanged (tests/data/sweep_keys.json)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

# facts of the machine or the moment, not of the code: env.* differs between hosts
VOLATILE_INFO = {"mlflow_error"}


def job_keys(sweep_dir: Path) -> dict[str, dict[str, list[str]]]:
    out = {}
    for path in sorted(sweep_dir.glob("*/result.json")):
        r = json.loads(path.read_text())
        out[path.parent.name] = {
            "result": sorted(r), "params": sorted(r["params"]), "metrics": sorted(r["metrics"]),
            "info": sorted(set(r["info"]) - VOLATILE_INFO),
            "files": sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")),
        }
    return out


def mlflow_keys(uri: str, experiment: str) -> dict[str, dict[str, list[str]]]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    out = {}
    for run in client.search_runs([exp.experiment_id]):
        role = run.data.tags.get("sweep.role")
        name = Path(run.data.tags["sweep.job_dir"]).name if role == "job" else "parent"
        tags = sorted(t for t in run.data.tags if not t.startswith(("env.", "mlflow.")) and
                      t.removeprefix("info.") not in VOLATILE_INFO)
        out[name] = {"params": sorted(run.data.params), "metrics": sorted(run.data.metrics),
                     "tags": tags, "status": [run.info.status],
                     "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id))}
    return out


def sweep_keys(sweep_dir: Path, uri: str, experiment: str) -> dict:
    with open(sweep_dir / "summary.csv", newline="") as f:
        columns = next(csv.reader(f))
    summary = json.loads((sweep_dir / "summary.json").read_text())
    return {"jobs": job_keys(sweep_dir), "summary_csv": sorted(columns),
            "summary_json": sorted(summary), "mlflow": mlflow_keys(uri, experiment),
            "sweep_files": sorted(p.name for p in sweep_dir.iterdir()
                                  if not p.name[0].isdigit() and not p.name.startswith(".")),
            "sweep_record": sorted(json.loads((sweep_dir / "sweep.json").read_text()))}


if __name__ == "__main__":  # python tests/keyset.py SWEEP_DIR URI EXPERIMENT > keys.json
    print(json.dumps(sweep_keys(Path(sys.argv[1]), sys.argv[2], sys.argv[3]), indent=1))
