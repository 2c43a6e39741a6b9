#!/usr/bin/env bash
# Issue 13's GPU check: resnet50 224 fp16 channels_last with torch.compile (reduce-overhead, CUDA
# graphs), the tool against the hand-written serving loop (handwritten_serving.py), alternated:
#   hand, tool single_stream b1, tool server b32 (p99 <= 15 ms search, 2 ms queue delay), hand,
#   tool single_stream b1.
# Each tool job measures its offline figure first, in the same process. Results: $OUT (or
# results/): serving.json (the tool's jobs) and handwritten.jsonl.
#   bash benchmarks/gpu/verify_serving.sh [extra overrides...]
set -uo pipefail
source benchmarks/gpu/setup_device.sh
out=${OUT:-results}
mkdir -p "$out"
common="runtime=compile runtime.mode=reduce-overhead model=resnet50 resolution=224 precision=fp16
  flags.channels_last=true tracking.enabled=false bench.warmup=10 bench.min_iters=30
  bench.min_seconds=1"
hand() { python3 benchmarks/gpu/handwritten_serving.py --out "$out/handwritten.jsonl" 2>&1 | grep -v Warn; }
single() {
  python3 -m sweep $common scenario=single_stream batch=1 hydra.run.dir=/tmp/sv/$1 "${@:2}" 2>&1 \
    | grep -E "ok|FAILED"
}
hand
single single1 "$@"
python3 -m sweep $common scenario=server scenario.slo_ms=15 scenario.max_queue_delay_ms=2 \
  batch=32 hydra.run.dir=/tmp/sv/server "$@" 2>&1 | grep -E "ok|FAILED"
hand
single single2 "$@"
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
keys = ["fps", "infer_ms_p50", "infer_ms_p99", "server_qps", "latency_ms_p50", "latency_ms_p99",
        "latency_ms_p99_ci95_high", "queue_ms_p50", "batch_fill_pct", "max_qps_at_slo",
        "gpu_busy_pct"]
rows = []
for d in sorted(Path("/tmp/sv").iterdir()):
    r = json.loads((d / "result.json").read_text())
    rows.append({"dir": d.name, "job": r["job"], "status": r["status"], "error": r["error"],
                 **{k: r["metrics"][k] for k in keys if k in r["metrics"]},
                 **{k: r["info"].get(k) for k in ("slo", "slo_result", "overloaded",
                                                   "capacity_qps", "load_curve", "batching")}})
    print(json.dumps(rows[-1])[:1500])
Path(sys.argv[1], "serving.json").write_text(json.dumps(rows, indent=1) + "\n")
PY
