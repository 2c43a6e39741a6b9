#!/usr/bin/env bash
# After a redesign: does the tool still work and measure on the GPU as before? Part `tests`: the
# tests that have CUDA paths (pipeline=gpu and its worker processes, the CUDA timing loop, the
# correctness check on CUDA, torch.compile). Part `runtimes`: eager resnet18 256 fp16
# channels_last at batch 1, 32, 256, the tool's jobs alternated with the hand-written loop
# (handwritten.py eager) twice, ABAB, in one call. Part `e2e`: pipeline=gpu (4 workers) and
# fast end to end on 256 generated 512x512 JPEGs, beside handwritten_e2e.py on the same files.
# Results: $OUT (or results/).
#   DEADLINE=590 bash benchmarks/checks/verify_redesign.sh runtimes e2e tests
set -uo pipefail
source benchmarks/lent_gpu/setup_device.sh
out=${OUT:-results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv | tee "$out/gpu.txt"
for part in "$@"; do
case $part in
  tests)
    left=$(( ${DEADLINE:-600} - SECONDS - 20 ))  # DEADLINE: seconds this whole call may take
    timeout $(( left < 420 ? left : 420 )) python3 -m pytest -q -p no:cacheprovider -rs tests/test_pipelines.py \
      tests/test_measure.py tests/test_accuracy.py tests/test_runtime_compile.py 2>&1 \
      | tail -25 | tee "$out/pytest.txt" ;;
  runtimes)
    tool="-m model=resnet18 resolution=256 batch=1,32,256 precision=fp16 flags.channels_last=true
      tracking.enabled=false bench.warmup=10 bench.min_iters=30 bench.min_seconds=1"
    for round in 1 2; do
      python3 benchmarks/reference/handwritten.py eager --out "$out/hand_$round.csv" 2>&1 | tail -2
      python3 -m sweep $tool hydra.sweep.dir=/tmp/rd/tool_$round 2>&1 | grep -E "^\[|done"
      python3 benchmarks/checks/summarise_runs.py /tmp/rd/tool_$round "$out/tool_$round.json"
    done ;;
  e2e)
    w=/tmp/e2e-verify
    bash benchmarks/checks/jpeg_set.sh $w
    common="data=imagefolder data.root=$w/j512 precision=fp16 batch=32 resolution=256
      model.weights=$w/head.pth model.num_classes=4 tracking.enabled=false bench.min_seconds=2"
    for round in 1 2; do
      python3 benchmarks/reference/handwritten_e2e.py --files $w/j512 2>&1 | grep -v Warn \
        | tee -a "$out/handwritten_e2e.txt"
      python3 -m sweep -m $common pipeline=gpu,fast hydra.sweep.dir=/tmp/rd/e2e_$round 2>&1 \
        | grep -E "^\[|done"
      python3 benchmarks/checks/summarise_runs.py /tmp/rd/e2e_$round "$out/e2e_$round.json"
    done ;;
  *) echo "unknown part $part"; exit 2 ;;
esac
done
