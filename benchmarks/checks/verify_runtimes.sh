#!/usr/bin/env bash
# The runtimes' GPU verification: resnet18 256 and resnet50 224 at batch 1, 32, 256, fp32 and
# fp16, for eager PyTorch (NCHW and channels_last), torch.compile (reduce-overhead,
# channels_last) and ONNX Runtime (CUDA EP, IO binding). Results: multirun/gpu-<part>-<runtime>/,
# one mlflow.db.
# Compared with handwritten.py by benchmarks/checks/compare_anchors.py; figures so far:
# benchmarks/results/h100_runtimes_2026-11-24/README.md.
#   bash benchmarks/checks/verify_runtimes.sh torch|compile|onnx [extra overrides...]
set -uo pipefail
source benchmarks/lent_gpu/setup_device.sh
part=$1; shift
bench="bench.warmup=10 bench.min_iters=30 bench.min_seconds=1 tracking.experiment=gpu-runtimes"
# resnet18 runs at 256 and resnet50 at 224: one multirun per model
case $part in
  torch)   extra="runtime=torch flags.channels_last=false,true" ;;
  compile) extra="runtime=compile runtime.mode=reduce-overhead flags.channels_last=true" ;;
  onnx)    extra="runtime=onnx" ; PRECISIONS=${PRECISIONS:-fp32,tf32,fp16} ;;
  *) echo "unknown part $part"; exit 2 ;;
esac
for spec in resnet18:256 resnet50:224; do
  model=${spec%%:*}; res=${spec##*:}
  python3 -m sweep -m model=$model resolution=$res batch=1,32,256 precision=${PRECISIONS:-fp32,fp16} $bench $extra \
    hydra.sweep.dir=multirun/gpu-$part-$model "$@" 2>&1 | grep -v "^\[20" | grep -v "INFO mlflow"
done
