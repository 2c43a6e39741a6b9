#!/usr/bin/env bash
# The pipelines' GPU verification: the pipeline tests with CUDA (pipeline=gpu unskipped), the
# hand-written end-to-end probe (handwritten_e2e.py) on its own files and on the set below, then
# pipeline=current|fast|gpu end to end on 256 generated 512x512 JPEGs through eager PyTorch fp16,
# batch 32, 256x256, with a classifier fitted to the set; each job's stage times (decode_ms,
# preprocess_ms, ...) say where its time goes. Needs hydra-core and omegaconf on the device
# (.gpu-carry/wheels, see setup_device.sh). Results: $OUT (or results/): runs.json and the probe.
# Why this case, and the figures so far: benchmarks/results/e2e_process_h100_2026-11-24/README.md.
#   bash benchmarks/checks/verify_pipelines.sh [extra overrides...]
set -uo pipefail
source benchmarks/lent_gpu/setup_device.sh
out=${OUT:-results}
mkdir -p "$out"
w=/tmp/e2e-verify
bash benchmarks/checks/jpeg_set.sh $w
if [ -z "${SKIP_TESTS:-}" ]; then  # SKIP_TESTS=1: not the pipeline tests
  timeout 400 python3 -m pytest -q -p no:cacheprovider tests/test_pipelines.py 2>&1 | tail -3 | tee "$out/pytest.txt"
fi
if [ -z "${SKIP_PROBES:-}" ]; then  # SKIP_PROBES=1: the sweep's runs only
  (python3 benchmarks/reference/handwritten_e2e.py; python3 benchmarks/reference/handwritten_e2e.py --files $w/j512) \
    2>&1 | grep -v Warn | tee "$out/handwritten_e2e.txt"
fi
common="data=imagefolder data.root=$w/j512 precision=fp16 batch=32 resolution=256
  model.weights=$w/head.pth model.num_classes=4 tracking.enabled=false bench.min_seconds=2"
runs=("pipeline=gpu" "pipeline=gpu pipeline.processes=0" "pipeline=gpu pipeline.processes=2"
      "pipeline=current" "pipeline=fast"
      "pipeline=gpu runtime=compile runtime.mode=reduce-overhead")
for run in "${runs[@]}"; do
  python3 -m sweep $common $run hydra.run.dir=$w/runs/"$(echo $run | tr " =." "__-")" "$@" 2>&1 | grep -v "^\[20"
  python3 benchmarks/checks/summarise_runs.py $w/runs "$out/runs.json"  # every run so far
done

