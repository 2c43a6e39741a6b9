#!/usr/bin/env bash
# Issue 14 on the GPU: the sampler's overhead on a launch-bound job (ABAB in one process), then
# sweeps in rounds with real NVML: resnet18 256 fp16 channels_last batch 1 and 32 eager, and
# resnet50 224 fp16 batch 32 eager and compile (default mode), bench.rounds=3. Results: $OUT.
#   bash benchmarks/checks/verify_telemetry.sh
set -uo pipefail
source benchmarks/lent_gpu/setup_device.sh
out=${OUT:-results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit \
  --format=csv > "$out/gpu.txt" 2>&1
timeout 70 python3 benchmarks/checks/telemetry_overhead.py --pairs 6 --seconds 2 \
  --out "$out/telemetry_overhead.json" 2>&1 | tail -3
common="precision=fp16 flags.channels_last=true flags.cudnn_benchmark=true bench.rounds=3
  bench.warmup=10 bench.min_iters=30 bench.min_seconds=1 check.samples=32
  tracking.uri=sqlite:////tmp/tel/mlflow.db"
mkdir -p /tmp/tel
timeout 110 python3 -m sweep -m runtime=torch model=resnet18 resolution=256 batch=1,32 $common \
  hydra.sweep.dir=/tmp/tel/r18 2>&1 | grep -E "round|sweep done|Error" | tail -8
timeout 190 python3 -m sweep -m runtime=torch,compile model=resnet50 resolution=224 batch=32 \
  $common hydra.sweep.dir=/tmp/tel/r50 2>&1 | grep -E "round|sweep done|Error" | tail -8
for s in r18 r50; do
  [ -f /tmp/tel/$s/report.md ] && cp /tmp/tel/$s/report.md "$out/report_$s.md"
done
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
keys = ["fps", "fps_rounds_ci95_low", "fps_rounds_ci95_high", "infer_cv_pct", "rounds",
        "energy_j_per_img", "img_per_j", "gpu_power_w", "gpu_power_w_max", "gpu_sm_clock_mhz",
        "gpu_sm_clock_mhz_min", "gpu_sm_clock_mhz_max", "gpu_mem_clock_mhz", "gpu_temp_c",
        "gpu_util_pct", "gpu_busy_pct"]
rows = []
for sweep in ("r18", "r50"):
    for f in sorted(Path("/tmp/tel", sweep).glob("*/result.json")):
        r = json.loads(f.read_text())
        rows.append({"job": r["job"], "status": r["status"], "error": r["error"],
                     **{k: r["metrics"].get(k) for k in keys},
                     **{k: r["info"].get(k) for k in ("round_values", "throttle",
                                                       "clock_events", "stability",
                                                       "telemetry", "telemetry_missing")}})
        print(json.dumps(rows[-1])[:900])
Path(sys.argv[1], "telemetry.json").write_text(json.dumps(rows, indent=1) + "\n")
PY
