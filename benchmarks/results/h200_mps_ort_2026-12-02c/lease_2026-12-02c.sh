#!/usr/bin/env bash
# The third machine of benchmarks/results/h200_mps_ort_2026-12-02c (torch and hydra only: carry
# .gpu-carry/min): pipeline=gpu in the job's process (prefetch 2 and 0) against handwritten_e2e.py,
# twice, then pipeline=gpu (torchvision) processes=4 +compile with and without CUDA MPS, and each
# job's env cuda_mps and bound_finding. Results in $OUT.
#   bash benchmarks/gpu/lease_2026-12-02c.sh
source benchmarks/gpu/setup_device.sh
w=/tmp/dali-verify; bash benchmarks/gpu/jpeg_set.sh $w > /dev/null 2>&1
c="data=imagefolder data.root=$w/j512 precision=fp16 batch=32 resolution=256 model.weights=$w/head.pth model.num_classes=4 tracking.enabled=false bench.min_seconds=2 force=true pipeline=gpu"
j() { python3 -m sweep $c "${@:2}" hydra.run.dir=$w/l2/$1 2>&1 | grep -E " ok | FAILED"; python3 benchmarks/gpu/summarise_runs.py $w/l2 $OUT/runs_l2.json | grep "^$1 "; }
for k in 1 2; do
  j p0_pf2_$k pipeline.processes=0
  j p0_pf0_$k pipeline.processes=0 pipeline.prefetch=0
  python3 benchmarks/gpu/handwritten_e2e.py --files $w/j512 2>&1 | grep -E "batched|decode-only|pure" | tee -a $OUT/hand_e2e_l2.txt
done
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log; mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
trap 'echo quit | nvidia-cuda-mps-control' EXIT
nvidia-cuda-mps-control -d && echo MPS on
j tv_p4_mps runtime=compile runtime.mode=reduce-overhead
echo quit | nvidia-cuda-mps-control; trap - EXIT; sleep 2; echo MPS off
j tv_p4_nomps runtime=compile runtime.mode=reduce-overhead
python3 - <<'P' | tee $OUT/findings.txt
import json,glob
for f in sorted(glob.glob('/tmp/dali-verify/l2/*/result.json')):
    r=json.load(open(f)); print(f.split('/')[4], r['env'].get('cuda_mps'), r['info'].get('bound_finding'))
P
