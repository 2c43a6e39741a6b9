#!/usr/bin/env bash
# Issue 16's open questions on the lent GPU, on verify_dali.sh's set (resnet18 256 fp16 b32, 256
# generated 512x512 JPEGs). STEP picks one part (each fits one device call):
#   STEP=dali  pipeline=dali +compile at prefetch 4 with hw_decoder_load 0.65, 0.9 and 1.0: how
#              much of DALI's ceiling is its split between the hardware decoder and the host
#   STEP=hand  pipeline=gpu in the job's process (processes=0, eager) against the hand-written
#              loop (handwritten_e2e.py, same files), alternated: tool, hand, tool, hand
#   STEP=mps   pipeline=gpu nvimgcodec processes=4 +compile with CUDA MPS running, then again
#              without: do the workers' contexts and the job's stop taking turns on the GPU?
#              The MPS control daemon is started for this step only and quit at its end (no
#              GPU setting is changed; skipped where nvidia-cuda-mps-control is missing).
# Results: $OUT (or results/): runs_<step>.json, hand_e2e.txt, mps.txt.
#   STEP=dali|hand|mps bash benchmarks/checks/verify_bound.sh [extra overrides...]
set -uo pipefail
step=${STEP:?STEP=dali, hand or mps}
source benchmarks/checks/e2e_set.sh  # $out, $w, $common, $compiled
nvimg4="pipeline=gpu pipeline.decoder=nvimgcodec pipeline.processes=4 $compiled"
job() {  # folder name, then overrides
  python3 -m sweep $common "${@:2}" hydra.run.dir=$w/$step/$1 2>&1 | grep -v "^\[20"
  python3 benchmarks/checks/summarise_runs.py $w/$step "$out/runs_$step.json" | grep "^$1 "
}
case $step in
  dali)
    for load in 0.65 0.9 1.0; do
      job "hw$load" pipeline=dali pipeline.hw_decoder_load=$load $compiled "$@"
    done ;;
  hand)
    for k in 1 2; do
      job "tool$k" pipeline=gpu pipeline.processes=0 "$@"
      python3 benchmarks/reference/handwritten_e2e.py --files $w/j512 2>&1 | tee -a "$out/hand_e2e.txt"
    done ;;
  mps)
    if ! command -v nvidia-cuda-mps-control >/dev/null; then
      echo "nvidia-cuda-mps-control is not on this machine: MPS not run" | tee "$out/mps.txt"
      job nomps $nvimg4 "$@"
      exit 0
    fi
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
    trap 'echo quit | nvidia-cuda-mps-control' EXIT
    nvidia-cuda-mps-control -d && echo "MPS daemon started" | tee "$out/mps.txt"
    job mps $nvimg4 "$@"
    echo quit | nvidia-cuda-mps-control && trap - EXIT && sleep 2
    echo "MPS daemon quit" | tee -a "$out/mps.txt"
    cat $CUDA_MPS_LOG_DIRECTORY/*.log 2>/dev/null | tail -5 >> "$out/mps.txt"
    job nomps $nvimg4 "$@" ;;
esac
