# Sourced by verify_dali.sh and verify_bound.sh: the device's paths (setup_device.sh), the results
# folder $out, the end-to-end set in $w (jpeg_set.sh, made once per warm lease), and the overrides
# of a job that reads it ($common; $compiled for runtime=compile with CUDA graphs).
source benchmarks/lent_gpu/setup_device.sh
out=${OUT:-results}
mkdir -p "$out"
w=/tmp/dali-verify
[ -f $w/head.pth ] || bash benchmarks/checks/jpeg_set.sh $w
common="data=imagefolder data.root=$w/j512 precision=fp16 batch=32 resolution=256
  model.weights=$w/head.pth model.num_classes=4 tracking.enabled=false bench.min_seconds=2
  force=true"  # a re-run in the same lease measures again (its run folders are fixed)
compiled="runtime=compile runtime.mode=reduce-overhead"
