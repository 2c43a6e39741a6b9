#!/usr/bin/env bash
# The GPU checks' end-to-end set in DIR: DIR/j512, 256 generated 512x512 JPEGs (4 classes), and
# DIR/head.pth, resnet18 weights whose classifier is fitted at 256 to a separate training set.
#   bash benchmarks/checks/jpeg_set.sh DIR
set -euo pipefail
w=$1
python3 -m sweep.demo_data generate $w/j512 --classes 4 --per-class 64 --min-size 512 \
  --max-size 512 --png-every 0 >/dev/null
python3 -m sweep.demo_data generate $w/train --classes 4 --per-class 32 --min-size 200 \
  --max-size 640 --seed 1 >/dev/null
python3 -m sweep.demo_data fit-head $w/train $w/head.pth --resolution 256 | tail -1
