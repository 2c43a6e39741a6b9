"""The end-to-end figures of each job folder under RUNS (hydra.run.dir of verify_pipelines.sh),
printed one line a job and written to OUT as JSON: e2e and pure inference per image, stage
times, accuracy, and e2e over pure inference (the ratio pipeline=gpu is held to: see
benchmarks/results/e2e_process_h100_2026-11-24/README.md).

    python3 benchmarks/checks/summarise_runs.py RUNS OUT.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = ["infer_ms_per_img", "e2e_ms_per_img", "e2e_fps", "decode_ms", "preprocess_ms", "h2d_ms",
        "infer_ms", "postprocess_ms", "accuracy_top1_pct", "pipeline_agreement_pct",
        "unreadable_files", "gpu_busy_pct", "decode_ceiling_fps", "infer_ceiling_fps",
        "pipeline_ceiling_fps", "e2e_vs_ceiling_pct", "cpu_decode_fallbacks"]


def main() -> None:
    runs, out = Path(sys.argv[1]), Path(sys.argv[2])
    rows = []
    for job in sorted(p for p in runs.iterdir() if (p / "result.json").exists()):
        r = json.loads((job / "result.json").read_text())
        m = r["metrics"]
        both = "e2e_ms_per_img" in m and "infer_ms_per_img" in m
        ratio = round(m["e2e_ms_per_img"] / m["infer_ms_per_img"], 2) if both else None
        rows.append({"run": job.name, "status": r["status"], "error": r["error"],
                     **{k: round(m[k], 4) for k in KEYS if k in m}, "e2e_over_pure": ratio,
                     "bound_by": r["info"].get("bound_by"),
                     "bound_basis": r["info"].get("bound_basis")})
    for row in rows:
        print(row["run"], row["status"], row.get("infer_ms_per_img"), row.get("e2e_ms_per_img"),
              row["e2e_over_pure"], row.get("e2e_fps"), row.get("e2e_vs_ceiling_pct"),
              row["bound_by"])
    out.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
