#!/usr/bin/env bash
# Issue 16's GPU check: resnet18 256x256 fp16 batch 32 end to end on 256 generated 512x512 JPEGs
# (4 classes, a classifier fitted to them), eager and runtime=compile reduce-overhead, through
# pipeline=gpu (torchvision's nvJPEG, and nvImageCodec's hw backend; and pipeline.processes=2
# and 8), pipeline=dali and pipeline=fast; each job reports its decode, pipeline and inference
# ceilings, e2e_vs_ceiling_pct and bound_by (runs.json). Then the hand-written DALI reference
# (handwritten_dali.py) on the same files: pipeline=dali is held to within 10% of it. Needs
# hydra-core/omegaconf and DALI + nvImageCodec, carried in parts and installed by assemble.sh
# (setup_device.sh puts them on the paths; handwritten_dali.py's docstring lists what DALI imports).
# Results: $OUT (or results/): runs.json, handwritten_dali.txt, pytest.txt.
#   [SET=torch|dali] bash benchmarks/checks/verify_dali.sh [extra overrides...]
set -uo pipefail
source benchmarks/checks/e2e_set.sh  # $out, $w, $common, $compiled
if [ -z "${SKIP_TESTS:-}" ]; then  # SKIP_TESTS=1: not the tests
  timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_pipeline_dali.py 2>&1 | tail -3 | tee "$out/pytest.txt"
fi
nvimg="pipeline=gpu pipeline.decoder=nvimgcodec"
# SET=torch: what needs torch and torchvision only; SET=dali: what needs DALI or nvImageCodec
# (then the hand-written DALI reference); both by default. The processes= runs ask whether more
# decoders side by side (one per worker process) lift the decode ceiling.
torch_runs=("pipeline=gpu" "pipeline=fast" "pipeline=gpu $compiled" "pipeline=fast $compiled"
            "pipeline=gpu pipeline.processes=8 $compiled")
dali_runs=("pipeline=dali" "$nvimg" "pipeline=dali $compiled" "$nvimg $compiled"
           "$nvimg pipeline.processes=8 $compiled" "$nvimg pipeline.processes=2 $compiled")
case ${SET:-all} in
  torch) runs=("${torch_runs[@]}") ;;
  dali) runs=("${dali_runs[@]}") ;;
  *) runs=("${torch_runs[@]}" "${dali_runs[@]}") ;;
esac
for run in "${runs[@]}"; do
  python3 -m sweep $common $run hydra.run.dir=$w/runs/"$(echo $run | tr " =." "__-")" "$@" 2>&1 | grep -v "^\[20"
  python3 benchmarks/checks/summarise_runs.py $w/runs "$out/runs.json"  # every run so far
done
[ "${SET:-all}" = torch ] && exit 0
(python3 benchmarks/reference/handwritten_dali.py --files $w/j512
 python3 benchmarks/reference/handwritten_dali.py --files $w/j512 --compile) 2>&1 | grep -v Warn | tee "$out/handwritten_dali.txt"
