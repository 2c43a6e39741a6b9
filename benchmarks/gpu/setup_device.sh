#!/usr/bin/env bash
# On the lent GPU machine (Python 3.12, torch 2.11+cu130, no hydra/mlflow/onnxruntime-gpu):
# install the carried wheels once per warm lease. Source it: `source benchmarks/gpu/setup_device.sh`.
# Wheels: `bash ../shared/device/wheelhouse.sh` (-> .gpu-carry/wheels), carried in one call, or
# together with onnxruntime-gpu as five parts joined by benchmarks/gpu/assemble.sh (-> /tmp/site,
# /tmp/ort).
# .gpu-carry/min (hydra_core, omegaconf, antlr4 wheels only) serves runs with tracking.enabled=false.
for wheels in .gpu-carry/wheels .gpu-carry/min; do
  if [ -d $wheels ] && [ ! -d /tmp/site/hydra ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $wheels/*.whl
  fi
done
# what the caller put on PYTHONPATH (e.g. DALI, nvImageCodec in their own --target folders) stays
export PYTHONPATH=/tmp/ort:/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 \
  SWEEP_CACHE_DIR=/tmp/sweep-cache
