#!/usr/bin/env bash
# The lease of 2026-12-05 (second session) for issue 33, run on the lent GPU from the repository
# root, one step per device call, back to back on one warm machine (/tmp lasts while it is warm):
#   setup     carry .gpu-carry/wheels (hydra, mlflow) and .gpu-carry/peer (Ultralytics' wheels
#             and the two YOLO11n ONNX files exported on the CPU host); install them; run the
#             suite's CUDA-only tests and a torchvision detector and segmenter on the GPU
#   part K    carry .gpu-carry/onnxruntime_gpu-K (onnxruntime-gpu 1.31.1 in 6 parts)
#   run       join and install onnxruntime-gpu; benchmarks/detection_peer.py --gpu, the tool with
#             pipeline=serial and pipeline=gpu alternated with Ultralytics' predict
# Made by: bash ../shared/device/wheelhouse.sh; carry-wheel.sh onnxruntime-gpu==1.31.1; the
# Ultralytics wheels (ultralytics 8.4.190, ultralytics-thop 2.2.3) by pip download.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/ort:/tmp/site:$PWD/src
parts=/tmp/parts-onnxruntime_gpu
case "$1" in
setup)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    .gpu-carry/wheels/*.whl 2>&1 | tail -1
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/peer \
    .gpu-carry/peer/*.whl 2>&1 | tail -1
  mkdir -p /tmp/dpw && cp .gpu-carry/peer/*.onnx /tmp/dpw/
  nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv,noheader \
    | tee "$OUT/device.txt"
  timeout 200 python3 -m pytest -q -rs -p no:cacheprovider tests/test_affinity.py \
    tests/test_runtime_compile.py tests/test_pipelines.py tests/test_scenarios.py \
    -k "nvml or graph or gpu or queued" 2>&1 | tail -25 | tee "$OUT/cuda_tests.txt"
  timeout 180 python3 -m sweep -m \
    model.name=ssdlite320_mobilenet_v3_large,lraspp_mobilenet_v3_large runtime=torch \
    device=cuda 'resolution=[384,640]' batch=8 pipeline=serial,gpu scenario=end_to_end \
    bench.min_seconds=1 hydra.sweep.dir=/tmp/tasks tracking.enabled=false 2>&1 | tail -8
  cp /tmp/tasks/report.md "$OUT/tasks_report.md" 2>/dev/null
  tar czf "$OUT/tasks.tgz" -C /tmp tasks 2>/dev/null
  ;;
part)
  mkdir -p $parts && cp .gpu-carry/onnxruntime_gpu-"$2"/* $parts/ && ls $parts
  ;;
run)
  whl=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
  cat $parts/part* > $whl && echo "05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7  $whl" \
    | sha256sum -c - && python3 -m pip install -q --no-index --no-deps --no-compile \
    --target /tmp/ort $whl 2>&1 | tail -1
  python3 -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())"
  timeout 560 python3 benchmarks/detection_peer.py --gpu --peer-site /tmp/peer --work /tmp/dpw \
    --frames 64 --pairs 2 --threads 4 --seconds 2 --pipelines serial gpu \
    --tool-arg precision=tf32 --tool-arg runtime.prefer_nhwc=false --out "$OUT" 2>&1 | tail -30
  ;;
esac
