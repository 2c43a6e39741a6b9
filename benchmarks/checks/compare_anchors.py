"""Compare a GPU sweep's fps with the hand-written probes: ANCHORS.md's figures
(anchors_h100.csv) and, with --today, the same probes re-measured in the same device call
(benchmarks/reference/handwritten.py).

    python benchmarks/checks/compare_anchors.py multirun/a multirun/b ... [--today hw.csv]
        [--out x.md]

A runtime must reach at least 0.95x the hand-written figure for the same case; below that is a
bug to find. ANCHORS.md's "ONNX Runtime fp32" column was measured with ONNX Runtime's default
use_tf32=1, so those anchors are compared with precision=tf32 (this tool's fp32 turns TF32 off).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

ANCHORS = Path(__file__).with_name("anchors_h100.csv")


def collect(sweep_dir: Path) -> list[dict]:
    """One flat row per job folder's result.json (what the CLI writes): params, then metrics."""
    rows = []
    for path in sorted(sweep_dir.glob("*/result.json")):
        r = json.loads(path.read_text())
        rows.append({"status": r["status"], **r.get("params", {}), **(r.get("metrics") or {})})
    return rows


def _key(model, res, batch, precision, runtime, cl, mode):
    return (str(model), int(res), int(batch), str(precision), str(runtime),
            str(cl).lower() == "true", str(mode or ""))


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dirs", nargs="+", type=Path)
    parser.add_argument("--today", type=Path, help="handwritten.py's CSV from the same call")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ours = {}
    for d in args.sweep_dirs:
        for r in collect(d):
            if r["status"] != "ok":
                continue
            mode = r.get("runtime.mode", "") if r["runtime"] == "compile" else ""
            ours[_key(r["model"], r["resolution"], r["batch"], r["precision"], r["runtime"],
                      r["flags.channels_last"], mode)] = r
    cases: dict[tuple, dict] = {}
    for a in csv.DictReader(open(ANCHORS)):
        k = _key(a["model"], a["resolution"], a["batch"], a["precision"], a["runtime"],
                 a["channels_last"], a["mode"])
        cases[k] = {"anchor": float(a["anchor_fps"]), "note": a["anchor_note"]}
    if args.today:
        for t in csv.DictReader(open(args.today)):
            k = _key(t["model"], t["resolution"], t["batch"], t["precision"], t["runtime"],
                     t["channels_last"], t["mode"])
            cases.setdefault(k, {"note": t["note"]})["today"] = float(t["fps"])
    lines = ["| case | runtime | anchor img/s | hand-written today | ours img/s | ours / anchor | "
             "ours / today | >= 0.95 | p50 ms/batch | CV % | GPU busy % | correct |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for k in sorted(cases, key=lambda k: (k[4], k[0], k[3], k[2])):
        c = cases[k]
        model, res, batch, precision, runtime, cl, mode = k
        case = f"{model} {res} bs{batch} {precision}{' cl' if cl else ''}"
        label = f"{runtime}{' ' + mode if mode else ''}"
        anchor, today, r = c.get("anchor"), c.get("today"), ours.get(k)
        if r is None:
            lines.append(f"| {case} | {label} | {_fmt(anchor)} | {_fmt(today)} | not run "
                         "| | | | | | | |")
            continue
        ratios = [r["fps"] / v if v else None for v in (anchor, today)]
        verdict = "yes" if max((x for x in ratios if x), default=0) >= 0.95 else "NO"
        cells = [case, label, _fmt(anchor), _fmt(today), _fmt(r["fps"]),
                 *("" if x is None else f"{x:.2f}" for x in ratios), verdict,
                 f"{r['infer_ms_p50']:.3f}", f"{r['infer_cv_pct']:.1f}",
                 _fmt(r.get("gpu_busy_pct")), "yes" if r.get("correct") == 1.0 else "NO"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
