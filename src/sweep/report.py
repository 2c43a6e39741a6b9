"""Aggregate a finished sweep from its job folders alone: summary.csv, summary.json, report.md.

    python -m sweep.report multirun/2026-11-23/18-00-00
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from sweep.job import RESULT_FILE

ID_COLUMNS = ["job_dir", "job", "status", "error", "runtime", "model", "resolution", "batch",
              "precision", "device", "hardware"]
HEADLINE = ["infer_ms_per_img", "infer_ms_per_img_ci95_low", "infer_ms_per_img_ci95_high",
            "infer_ms_p50", "infer_ms_p90", "infer_ms_p99", "infer_cv_pct", "fps",
            "gflop_per_img", "tflops", "tflops_peak", "util_pct", "max_abs_err",
            "agreement_top1_pct", "export_s", "first_infer_ms", "host_rss_peak_mb",
            "gpu_mem_peak_mb"]


def _job_order(path: Path) -> tuple[int, str]:
    head = path.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, path.name)


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One flat row per job folder that holds a result.json."""
    rows = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if (p / RESULT_FILE).is_file()),
                          key=_job_order):
        result = json.loads((job_dir / RESULT_FILE).read_text())
        rows.append(to_row(result, job_dir.name))
    return rows


def to_row(result: dict[str, Any], job_dir: str) -> dict[str, Any]:
    row: dict[str, Any] = {"job_dir": job_dir, "job": result["job"], "status": result["status"],
                           "error": result.get("error")}
    row.update(result.get("params", {}))
    row.update({k: v for k, v in result.get("info", {}).items() if k not in row})
    row.update(result.get("metrics", {}))
    return row


def columns(rows: list[dict[str, Any]]) -> list[str]:
    seen = [c for c in ID_COLUMNS + HEADLINE if any(c in r for r in rows)]
    for r in rows:
        seen.extend(k for k in r if k not in seen)
    return seen


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits + 1}g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(title for _, title in cols) + " |",
             "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(_fmt(r.get(key)) for key, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


RUNTIME_TABLE = [("model", "model"), ("resolution", "resolution"), ("batch", "batch"),
                 ("precision", "precision"), ("infer_ms_per_img", "ms/image"), ("fps", "FPS"),
                 ("infer_cv_pct", "CV %"), ("tflops", "TFLOPS"), ("tflops_peak", "TFLOPS peak"),
                 ("util_pct", "util %"), ("cache", "cache")]


def render_markdown(rows: list[dict[str, Any]], title: str) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    out = [f"# Sweep {title}", "", f"{len(rows)} jobs: {len(ok)} ok, {len(failed)} failed.", ""]
    hardware = sorted({str(r.get("util_basis")) for r in ok if r.get("util_basis")})
    if hardware:
        out += ["Utilisation is against: " + "; ".join(hardware) + ".", ""]
    for runtime in sorted({r.get("runtime") for r in ok}, key=str):
        sub = [r for r in ok if r.get("runtime") == runtime]
        sub.sort(key=lambda r: (str(r.get("model")), r.get("resolution") or 0, r.get("batch") or 0))
        out += [f"## runtime={runtime}", "", markdown_table(sub, RUNTIME_TABLE), ""]
    if failed:
        out += ["## Failed jobs", "", markdown_table(failed, [("job_dir", "job"), ("error", "reason")]), ""]
    return "\n".join(out)


def write_reports(sweep_dir: Path, rows: list[dict[str, Any]] | None = None) -> list[Path]:
    """Write summary.csv, summary.json and report.md beside the job folders; return their paths."""
    rows = collect(sweep_dir) if rows is None else rows
    cols = columns(rows)
    csv_path, json_path, md_path = (sweep_dir / n for n in ("summary.csv", "summary.json", "report.md"))
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps({"sweep_dir": str(sweep_dir), "jobs": rows}, indent=2, default=str))
    md_path.write_text(render_markdown(rows, sweep_dir.name))
    return [csv_path, json_path, md_path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.report", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder holding job folders")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder")
    rows = collect(args.sweep_dir)
    if not rows:
        parser.error(f"no job folder with a {RESULT_FILE} under {args.sweep_dir}")
    for path in write_reports(args.sweep_dir, rows):
        print(path)
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows)} jobs, {failed} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
