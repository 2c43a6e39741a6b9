#!/usr/bin/env bash
# The one lease of 2026-12-05, run on the lent GPU from the repository root with .gpu-carry
# carried (wheels of hydra and mlflow; .gpu-carry/old/src = `git archive bfd26ff src`, the code
# before the lifecycle/serving refactor):
#   A  the server's SLO search at b32, before and after the refactor, alternated (two pairs)
#   B  an SLO sweep (batch=8,32) whose recommendation names max_qps_at_slo and J/img at that load
#   C  isolation=process with a GPU lease: the lock folder is private to the user
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
  .gpu-carry/wheels/*.whl 2>&1 | tail -1
nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv,noheader | tee "$OUT/device.txt"
common="model=resnet50 resolution=224 precision=fp16 flags.channels_last=true runtime=torch
  bench.warmup=10 bench.min_iters=30 bench.min_seconds=1 force=true"
server="scenario=server scenario.slo_ms=15 scenario.max_queue_delay_ms=2"
job() {  # label, source folder: one server job at b32, its line, its result
  PYTHONPATH=/tmp/site:$2 timeout 200 python3 -m sweep $common $server batch=32 \
    tracking.enabled=false hydra.run.dir=/tmp/sv/$1 2>&1 | grep -E " ok | FAILED|rror" | tail -2
  cp /tmp/sv/$1/result.json "$OUT/$1.json" 2>/dev/null
}
for k in 1 2; do
  job before$k "$PWD/.gpu-carry/old/src"
  job after$k "$PWD/src"
done
PYTHONPATH=/tmp/site:$PWD/src timeout 300 python3 -m sweep -m $common $server batch=8,32 \
  hydra.sweep.dir=/tmp/slo tracking.uri=sqlite:////tmp/slo.db 2>&1 | tail -4
cp /tmp/slo/report.md /tmp/slo/summary.json "$OUT/" 2>/dev/null
PYTHONPATH=/tmp/site:$PWD/src timeout 120 python3 -m sweep model=resnet18 isolation=process \
  'gpus=[0]' tracking.enabled=false hydra.run.dir=/tmp/iso 2>&1 | grep -E " ok | FAILED|rror"
stat -c '%A %U %n' /tmp/sweep-gpu-locks-* /tmp/sweep-gpu-locks-*/* 2>&1 | tee "$OUT/locks.txt"
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for p in sorted(out.glob("*[12].json")):
    m = json.loads(p.read_text())["metrics"]
    print(p.stem, {k: round(m[k], 1) for k in ("fps", "max_qps_at_slo", "server_qps",
                                                "latency_ms_p99") if k in m})
PY
