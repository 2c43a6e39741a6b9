#!/usr/bin/env bash
# Issue 13's GPU check: resnet50 224 fp16 with torch.compile (reduce-overhead, CUDA graphs,
# channels_last) or, with RUNTIME=onnx, ONNX Runtime's CUDA provider (IO binding), the tool against
# the hand-written serving loop (handwritten_serving.py; --onnx on the file the tool exported),
# alternated: tool single_stream b1, hand, tool server b32 (p99 <= 15 ms search, 2 ms queue
# delay), hand, tool single_stream b1.
# Each tool job measures its offline figure first, in the same process. Results: $OUT (or
# results/): serving.json (the tool's jobs) and handwritten.jsonl.
#   [RUNTIME=onnx] bash benchmarks/checks/verify_serving.sh [extra overrides...]
set -uo pipefail
source benchmarks/lent_gpu/setup_device.sh
out=${OUT:-results}
mkdir -p "$out"
runtime=${RUNTIME:-compile}
if [ "$runtime" = onnx ]; then
  rt="runtime=onnx"  # NCHW input; prefer_nhwc (on by default) lets ONNX Runtime pick its layout
else
  rt="runtime=compile runtime.mode=reduce-overhead flags.channels_last=true"
fi
common="$rt model=resnet50 resolution=224 precision=fp16 tracking.enabled=false bench.warmup=10
  bench.min_iters=30 bench.min_seconds=1"
sv=/tmp/sv-$runtime
hand() {
  local file=()
  if [ "$runtime" = onnx ]; then  # the fp16 file the first tool job exported (the lease's one)
    file=(--onnx "$(find "$SWEEP_CACHE_DIR" -name model.onnx | head -1)")
  fi
  python3 benchmarks/reference/handwritten_serving.py --out "$out/handwritten.jsonl" "${file[@]}" 2>&1 \
    | grep -v Warn
}
single() {
  python3 -m sweep $common scenario=single_stream batch=1 hydra.run.dir=$sv/$1 "${@:2}" 2>&1 \
    | grep -E "ok|FAILED"
}
single single1 "$@"
hand
python3 -m sweep $common scenario=server scenario.slo_ms=15 scenario.max_queue_delay_ms=2 \
  batch=32 hydra.run.dir=$sv/server "$@" 2>&1 | grep -E "ok|FAILED"
hand
single single2 "$@"
python3 - "$out" "$sv" <<'PY'
import json, sys
from pathlib import Path
keys = ["fps", "infer_ms_p50", "infer_ms_p99", "server_qps", "latency_ms_p50", "latency_ms_p99",
        "latency_ms_p99_ci95_high", "queue_ms_p50", "batch_fill_pct", "max_qps_at_slo",
        "gpu_busy_pct"]
rows = []
for d in sorted(Path(sys.argv[2]).iterdir()):
    r = json.loads((d / "result.json").read_text())
    rows.append({"dir": d.name, "job": r["job"], "status": r["status"], "error": r["error"],
                 **{k: r["metrics"][k] for k in keys if k in r["metrics"]},
                 **{k: r["info"].get(k) for k in ("slo", "slo_result", "overloaded",
                                                   "capacity_qps", "load_curve", "batching")}})
    print(json.dumps(rows[-1])[:1500])
Path(sys.argv[1], f"serving_{Path(sys.argv[2]).name}.json").write_text(json.dumps(rows, indent=1) + "\n")
PY
