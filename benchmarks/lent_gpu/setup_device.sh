#!/usr/bin/env bash
# On the lent GPU machine (Python 3.12, torch 2.11+cu130, no hydra/mlflow/onnxruntime-gpu):
# install the carried wheels once per warm lease. Source it: `source benchmarks/lent_gpu/setup_device.sh`.
# Wheels: `bash ../shared/device/wheelhouse.sh` (-> .gpu-carry/wheels), carried in one call, or
# together with the large wheels as parts joined by benchmarks/lent_gpu/assemble.sh (-> /tmp/site,
# /tmp/ort, /tmp/dali, /tmp/nvimg).
# .gpu-carry/min (hydra_core, omegaconf, antlr4 wheels only) serves runs with tracking.enabled=false.
for wheels in .gpu-carry/wheels .gpu-carry/min; do
  if [ -d $wheels ] && [ ! -d /tmp/site/hydra ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $wheels/*.whl
  fi
done
# what assemble.sh installed (onnxruntime-gpu, DALI, nvImageCodec + nvJPEG, each in its folder) and
# what the caller put on PYTHONPATH stay
extra=$(ls -d /tmp/dali /tmp/nvimg 2>/dev/null | tr '\n' ':')
export PYTHONPATH=/tmp/ort:/tmp/site:$extra$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 \
  SWEEP_CACHE_DIR=/tmp/sweep-cache
# nvImageCodec loads nvJPEG from the library path, and DALI's mixed decoder nvImageCodec itself
for lib in /tmp/nvimg/nvidia/cu13/lib /tmp/nvimg/nvidia/nvimgcodec; do
  if [ -d $lib ]; then export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}; fi
done
