#!/usr/bin/env bash
# On the device, after the calls that each copied one part into /tmp/parts
# (`mkdir -p /tmp/parts && cp .gpu-carry/p-K/* /tmp/parts/`): join them into the bundle made here by
#   tar cf bundle.tar -C bundle wheels big && split -n N -d -a 1 bundle.tar part   (in .gpu-carry;
#   wheels/: ../shared/device/wheelhouse.sh, big/: onnxruntime-gpu, DALI, nvImageCodec, nvJPEG)
# check it, and install: wheels -> /tmp/site, onnxruntime-gpu -> /tmp/ort, DALI -> /tmp/dali,
# nvImageCodec and nvJPEG -> /tmp/nvimg. setup_device.sh puts whichever exist on the paths.
#   bash benchmarks/lent_gpu/assemble.sh SHA256
set -euo pipefail
cat /tmp/parts/part* > /tmp/bundle.tar
echo "$1  /tmp/bundle.tar" | sha256sum -c -
mkdir -p /tmp/carry && tar xf /tmp/bundle.tar -C /tmp/carry && rm /tmp/bundle.tar
pipi() { python3 -m pip install -q --no-index --no-deps --no-compile --target "$@"; }
pipi /tmp/site /tmp/carry/wheels/*.whl
for w in /tmp/carry/big/*.whl; do
  case $(basename "$w") in
    onnxruntime_gpu-*) pipi /tmp/ort "$w" ;;
    nvidia_dali_*) pipi /tmp/dali "$w" ;;
    nvidia_nvimgcodec_*|nvidia_nvjpeg-*) pipi /tmp/nvimg "$w" ;;
    *) pipi /tmp/site "$w" ;;
  esac
done
rm -rf /tmp/carry /tmp/parts
echo "assembled: $(ls -d /tmp/site /tmp/ort /tmp/dali /tmp/nvimg 2>/dev/null | tr '\n' ' ')"
