#!/usr/bin/env bash
# On the device, after five calls that each copied one part into /tmp/parts
# (`mkdir -p /tmp/parts && cp .gpu-carry/p-K/* /tmp/parts/`): join them into the bundle made here by
#   tar cf bundle.tar wheels onnxruntime_gpu-*.whl && split -n 5 -d bundle.tar part   (in .gpu-carry)
# check it, and install the wheels into /tmp/site and onnxruntime-gpu into /tmp/ort.
#   bash benchmarks/gpu/assemble.sh SHA256
set -euo pipefail
cat /tmp/parts/part0* > /tmp/bundle.tar
echo "$1  /tmp/bundle.tar" | sha256sum -c -
mkdir -p /tmp/carry && tar xf /tmp/bundle.tar -C /tmp/carry
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/carry/wheels/*.whl
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ort /tmp/carry/onnxruntime_gpu-*.whl
echo "assembled: /tmp/site (hydra, mlflow, ...) and /tmp/ort (onnxruntime-gpu)"
