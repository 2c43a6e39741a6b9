#!/usr/bin/env bash
# The lease of benchmarks/results/h200_affinity_mps_2026-12-03, one STEP per device call (each
# call also carries .gpu-carry/min, the hydra wheels, and one part of the DALI + nvImageCodec
# bundle, .gpu-carry/d-K, joined at STEP=D by assemble.sh):
#   A  the host's topology (lscpu, numactl, nvidia-smi topo, NVML's CPUs of the GPU), the CUDA
#      test of bench.cpu_affinity, then resnet50 224 fp16 b1 single stream with runtime=compile
#      runtime.cuda_graph=true under bench.cpu_affinity none / one GPU-local core / four / gpu,
#      alternated: does pinning take the single-stream p99 to the offline one?
#   B  pipeline=gpu (torchvision) +compile under CUDA MPS with pipeline.processes=2, 3, 4: does a
#      smaller share of the GPU for decoding leave e2e nearer its (lower) decode ceiling?
#   C  single stream again, the order of A reversed
#   P  nothing but the part it carries
#   D  assemble the bundle; under MPS pipeline=gpu pipeline.decoder=nvimgcodec processes=2 and 3;
#      pipeline=dali +compile against handwritten_dali.py --compile --depth 4, alternated twice
# Results in $OUT: *.txt and the jobs' result.json files as tarballs.
#   bash benchmarks/gpu/lease_2026-12-03.sh STEP
set -uo pipefail
step=$1
mkdir -p /tmp/parts && cp .gpu-carry/d-*/part* /tmp/parts/ 2>/dev/null
source benchmarks/gpu/setup_device.sh
sv=/tmp/sv
rn50="model=resnet50 resolution=224 precision=fp16 tracking.enabled=false bench.warmup=10
  bench.min_iters=30 bench.min_seconds=1 flags.channels_last=true force=true"
graph="runtime=compile runtime.mode=default runtime.cuda_graph=true"
single="$graph scenario=single_stream batch=1 scenario.duration_s=3"
tool() {  # folder, overrides: one serving job, its line, and its figures
  python3 -m sweep $rn50 "${@:2}" hydra.run.dir=$sv/$1 2>&1 | grep -E " ok | FAILED|Error"
  python3 - "$sv/$1/result.json" <<'PY' | tee -a "$OUT/serving.txt"
import json, sys
r = json.load(open(sys.argv[1])); m = r["metrics"]
keys = ["fps", "infer_ms_p50", "infer_ms_p99", "latency_ms_p50", "latency_ms_p99",
        "latency_ms_p99_ci95_high"]
row = {k: round(m[k], 4) for k in keys if k in m}
if "latency_ms_p99" in m and "infer_ms_p99" in m:
    row["single_p99_over_offline_p99"] = round(m["latency_ms_p99"] / m["infer_ms_p99"], 3)
print(sys.argv[1].split("/")[-2], r["status"], r["error"], json.dumps(row),
      r["info"].get("cpu_affinity"))
PY
}
local_cpus() {  # NVML's CPUs of cuda:0 within this process's set, as a python list
  python3 -c "import torch; from sweep.measure import affinity as a
print(sorted(a.resolve('gpu', torch.device('cuda', 0))[0]))"
}
mps_on() {
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  trap 'echo quit | nvidia-cuda-mps-control' EXIT
  nvidia-cuda-mps-control -d && echo "MPS daemon started" | tee -a "$OUT/mps.txt"
}
e2e() {  # folder, overrides: one end-to-end job on the set of e2e_set.sh, and its line
  python3 -m sweep $common "${@:2}" hydra.run.dir=$w/$step/$1 2>&1 | grep -E " ok | FAILED|Error"
  python3 benchmarks/gpu/summarise_runs.py $w/$step "$OUT/runs_$step.json" | grep "^$1 " \
    | tee -a "$OUT/e2e.txt"
}
singles() {  # the affinity variants in the order given
  cpus=$(local_cpus)
  one=$(python3 -c "c=$cpus; print(c[len(c) // 2])")
  four=$(python3 -c "c=$cpus; m=len(c) // 2; print(','.join(map(str, c[m:m + 4])))")
  for v in "$@"; do
    case $v in
      none) tool "single_${step}_none_$RANDOM" $single ;;
      one) tool "single_${step}_one_$RANDOM" $single bench.cpu_affinity=$one ;;
      four) tool "single_${step}_four_$RANDOM" $single "bench.cpu_affinity=\"$four\"" ;;
      gpu) tool "single_${step}_gpu_$RANDOM" $single bench.cpu_affinity=gpu ;;
    esac
  done
}
case $step in
  A)
    { lscpu | grep -E "^(CPU\(s\)|Model name|Thread|Core|Socket|NUMA)"; numactl -H 2>&1 | head -4
      nvidia-smi topo -m 2>&1 | head -6; echo "NVML local CPUs: $(local_cpus)"
      echo "process CPUs: $(python3 -c 'import os; print(sorted(os.sched_getaffinity(0)))')"
    } | tee "$OUT/topology.txt"
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_affinity.py 2>&1 | tail -3 \
      | tee "$OUT/pytest.txt"
    singles none one none one four gpu ;;
  B)
    source benchmarks/gpu/e2e_set.sh  # $out, $w, $common, $compiled
    mps_on
    for p in 3 2 4; do e2e tv$p pipeline=gpu pipeline.processes=$p $compiled; done ;;
  B2)  # B's two figures again, in the same machine after D: tv3 (the bar met) and tv4
    source benchmarks/gpu/e2e_set.sh
    mps_on
    for p in 3 4; do e2e tv${p}b pipeline=gpu pipeline.processes=$p $compiled; done ;;
  C)
    singles one none one none ;;
  P)  # a call that only carries its part (the machine stays warm between calls)
    ls /tmp/parts | tee "$OUT/parts.txt" ;;
  D)
    bash benchmarks/gpu/assemble.sh "$(cut -d' ' -f1 .gpu-carry/sha2.txt)" 2>&1 | tail -2
    source benchmarks/gpu/e2e_set.sh  # DALI and nvImageCodec now on the paths
    mps_on
    for p in 2 3; do
      e2e nv$p pipeline=gpu pipeline.decoder=nvimgcodec pipeline.processes=$p $compiled
    done
    echo quit | nvidia-cuda-mps-control; trap - EXIT; sleep 2; echo "MPS daemon quit" >> "$OUT/mps.txt"
    for k in 1 2; do  # the tool (its timed runs on DALI's file reader since d3cc740), the hand
      e2e dali$k pipeline=dali pipeline.prefetch=4 $compiled
      python3 benchmarks/gpu/handwritten_dali.py --files $w/j512 --compile --depth 4 2>&1 \
        | grep -v Warn | tee -a "$OUT/handwritten_dali.txt"
    done ;;
esac
tar czf "$OUT/results_$step.tgz" -C / $(cd / && ls -d tmp/sv/*/result.json tmp/sv/*/samples.json tmp/dali-verify/$step/*/result.json 2>/dev/null) 2>/dev/null
true
