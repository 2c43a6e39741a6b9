#!/usr/bin/env bash
# Issue 4's GPU verification: the pipeline tests with CUDA (pipeline=gpu unskipped), then
# pipeline=current|fast|gpu end to end on a generated set of mixed-size images through eager
# PyTorch fp16, batch 32, 256x256 (the issue's command), with a classifier fitted to the set.
# Needs hydra-core and omegaconf on the device: .gpu-carry/wheels (setup_device.sh) or a copy of
# the installed packages in .gpu-carry/e2e-site. Results: $OUT (or results/) as e2e_<pipeline>.json.
#   bash benchmarks/gpu/verify_pipelines.sh [extra overrides...]
set -uo pipefail
source benchmarks/gpu/setup_device.sh
[ -d .gpu-carry/e2e-site ] && export PYTHONPATH=$PWD/.gpu-carry/e2e-site:$PYTHONPATH
out=${OUT:-results}
mkdir -p "$out"
work=/tmp/e2e-verify
mkdir -p $work
python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision",
  torchvision.__version__, torch.cuda.get_device_name())'
python3 -m pytest -q -p no:cacheprovider tests/test_pipelines.py tests/test_data.py -m "not slow" \
  2>&1 | tee "$out/pytest.txt" | tail -15
# 4 classes x 64 images of 200..640 px (a quarter PNG), and a training set for the classifier
python3 -m sweep.data generate $work/eval --classes 4 --per-class 64 --min-size 200 --max-size 640
python3 -m sweep.data generate $work/train --classes 4 --per-class 32 --min-size 200 --max-size 640 --seed 1
python3 -m sweep.data fit-head $work/train $work/head.pth --resolution 256
common="data=imagefolder data.root=$work/eval precision=fp16 batch=32 resolution=256
  model.weights=$work/head.pth model.num_classes=4 tracking.enabled=false bench.min_seconds=2"
for run in "pipeline=current" "pipeline=fast" "pipeline=fast flags.pin_memory=true flags.gpu_non_blocking=true" \
           "pipeline=gpu" "pipeline=gpu flags.pin_memory=true flags.gpu_non_blocking=true"; do
  python3 -m sweep $common $run hydra.run.dir=$work/runs/"$(echo $run | tr " =." "__-")" "$@" 2>&1 | grep -v "^\[20"
done
python3 - "$work/runs" "$out" <<'EOF'
import json, sys
from pathlib import Path
keys = ["infer_ms_per_img", "e2e_ms_per_img", "e2e_fps", "decode_ms", "preprocess_ms", "h2d_ms",
        "infer_ms", "postprocess_ms", "accuracy_top1_pct", "pipeline_agreement_pct",
        "cpu_decode_fallbacks", "unreadable_files"]
rows = []
for job in sorted(Path(sys.argv[1]).iterdir()):
    r = json.loads((job / "result.json").read_text())
    rows.append({"run": job.name, "status": r["status"], "error": r["error"],
                 **{k: r["metrics"].get(k) for k in keys},
                 "fallbacks": r["info"].get("cpu_decode_fallbacks")})
    print(job.name, r["status"], r["error"] or "",
          " ".join(f"{k}={r['metrics'][k]:.3f}" for k in keys if k in r["metrics"]))
Path(sys.argv[2], "e2e_pipelines.json").write_text(json.dumps(rows, indent=2))
EOF
