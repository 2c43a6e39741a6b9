"""Compare a GPU sweep's fps with the hand-written probes of ANCHORS.md (anchors_h100.csv).

    python benchmarks/compare_anchors.py multirun/a multirun/b ... [--out results/x.md]

A runtime must reach at least 0.95x the anchor for the same case; below that is a bug to find.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from sweep.report import collect

ANCHORS = Path(__file__).with_name("anchors_h100.csv")


def _key(model, res, batch, precision, runtime, cl, mode):
    return (str(model), int(res), int(batch), str(precision), str(runtime),
            str(cl).lower() == "true", str(mode or ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep_dirs", nargs="+", type=Path)
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
    lines = ["| case | runtime | anchor img/s | ours img/s | ours / anchor | >= 0.95 | p50 ms/batch | CV % | correct |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- |"]
    for a in csv.DictReader(open(ANCHORS)):
        k = _key(a["model"], a["resolution"], a["batch"], a["precision"], a["runtime"],
                 a["channels_last"], a["mode"])
        case = f"{a['model']} {a['resolution']} bs{a['batch']} {a['precision']}"
        r = ours.get(k)
        if r is None:
            lines.append(f"| {case} | {a['anchor_note']} | {float(a['anchor_fps']):,.0f} | not run | | | | | |")
            continue
        ratio = r["fps"] / float(a["anchor_fps"])
        lines.append(f"| {case} | {a['anchor_note']} | {float(a['anchor_fps']):,.0f} | {r['fps']:,.0f} | "
                     f"{ratio:.2f} | {'yes' if ratio >= 0.95 else 'NO'} | {r['infer_ms_p50']:.3f} | "
                     f"{r['infer_cv_pct']:.1f} | {'yes' if r.get('correct') == 1.0 else 'NO'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
