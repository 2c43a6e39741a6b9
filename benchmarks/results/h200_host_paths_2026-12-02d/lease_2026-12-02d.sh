#!/usr/bin/env bash
# The second machine of benchmarks/results/h200_host_paths_2026-12-02d, one STEP per device call
# (each call also carries one part of DALI + nvImageCodec + the hydra wheels, .gpu-carry/d-K,
# joined at STEP=E by assemble.sh):
#   A  the CUDA graph tests; resnet50 224 fp16 b1 single stream with runtime=compile
#      runtime.cuda_graph=true, the hand-written reduce-overhead serving loop, the server search
#      at b32 with the same runtime, single stream again
#   B  probe_host_paths.py's single section (direct replay by hand, alternated), and single
#      stream with reduce-overhead and with cuda_graph=true again
#   C  probe_host_paths.py's e2e section again (pipeline=gpu in one process against the hand
#      loop), and pre2 (preprocessing's GPU time, with stacking straight into float32)
#   D  eager torch with and without runtime.cuda_graph=true: offline b1 and single stream
#   F  (a third machine, .gpu-carry/min only) probe_graph_serving.py (the single-stream path
#      layer by layer), and single stream with cuda_graph=true twice, alternated, their samples
#   E  pipeline=dali +compile against handwritten_dali.py --compile (hw_decoder_load 0.9 both),
#      alternated twice
# Results in $OUT: *.txt, result.json files as tarballs.
#   bash benchmarks/gpu/lease_2026-12-02d.sh STEP
set -uo pipefail
step=$1
mkdir -p /tmp/parts && cp .gpu-carry/d-*/part* /tmp/parts/ 2>/dev/null
source benchmarks/gpu/setup_device.sh
sv=/tmp/sv
rn50="model=resnet50 resolution=224 precision=fp16 tracking.enabled=false bench.warmup=10
  bench.min_iters=30 bench.min_seconds=1 flags.channels_last=true force=true"
graph="runtime=compile runtime.mode=default runtime.cuda_graph=true"
tool() {  # folder, overrides: one job, its line, and its figures
  python3 -m sweep $rn50 "${@:2}" hydra.run.dir=$sv/$1 2>&1 | grep -E " ok | FAILED|Error"
  python3 - "$sv/$1/result.json" <<'PY' | tee -a "$OUT/serving.txt"
import json, sys
r = json.load(open(sys.argv[1])); m = r["metrics"]
keys = ["fps", "infer_ms_p50", "infer_ms_p99", "latency_ms_p50", "latency_ms_p99",
        "latency_ms_p99_ci95_high", "max_qps_at_slo", "server_qps", "batch_fill_pct",
        "gpu_busy_pct"]
row = {k: round(m[k], 4) for k in keys if k in m}
if "latency_ms_p99" in m and "infer_ms_p99" in m and "single" in sys.argv[1]:
    row["single_p99_over_offline_p99"] = round(m["latency_ms_p99"] / m["infer_ms_p99"], 3)
print(sys.argv[1].split("/")[-2], r["job"], r["status"], r["error"], json.dumps(row),
      r["info"].get("cuda_graph"), r["info"].get("slo_result", ""))
PY
}
case $step in
  A)
    timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_runtime_compile.py \
      -k "captured or cuda_graph" 2>&1 | tail -3 | tee "$OUT/pytest.txt"
    tool single_graph1 $graph scenario=single_stream batch=1
    python3 benchmarks/gpu/handwritten_serving.py --out "$OUT/handwritten.jsonl" 2>&1 | grep -v Warn
    tool server_graph $graph scenario=server scenario.slo_ms=15 scenario.max_queue_delay_ms=2 \
      batch=32
    tool single_graph2 $graph scenario=single_stream batch=1 ;;
  B)
    python3 benchmarks/gpu/probe_host_paths.py --files /tmp --sections single \
      --out "$OUT/probe_single.json" 2>&1 | grep -v -i warn | tee "$OUT/probe_single.txt"
    tool single_ro runtime=compile runtime.mode=reduce-overhead scenario=single_stream batch=1
    tool single_graph3 $graph scenario=single_stream batch=1 ;;
  C)
    [ -d /tmp/j512 ] || python3 -m sweep.demo_data generate /tmp/j512 --classes 4 --per-class 64 \
      --min-size 512 --max-size 512 --png-every 0 >/dev/null
    python3 benchmarks/gpu/probe_host_paths.py --files /tmp/j512 --sections e2e,pre2 \
      --out "$OUT/probe_e2e.json" 2>&1 | grep -v -i warn | tee "$OUT/probe_e2e.txt" ;;
  D)
    for k in 1 2; do
      tool eager_b1_$k runtime=torch batch=1
      tool eager_graph_b1_$k runtime=torch runtime.cuda_graph=true batch=1
    done
    tool eager_graph_single runtime=torch runtime.cuda_graph=true scenario=single_stream batch=1 ;;
  F)
    tool single_graph4 $graph scenario=single_stream batch=1
    python3 benchmarks/gpu/probe_graph_serving.py --out "$OUT/probe_graph_serving.json" 2>&1 \
      | grep -v -i warn | tee "$OUT/probe_graph_serving.txt"
    tool single_graph5 $graph scenario=single_stream batch=1
    tar czf "$OUT/samples_F.tgz" -C / $(cd / && ls tmp/sv/single_graph[45]/samples.json) ;;
  E)
    bash benchmarks/gpu/assemble.sh "$(cut -d' ' -f1 .gpu-carry/sha2.txt)"
    source benchmarks/gpu/e2e_set.sh  # $out, $w, $common, $compiled; DALI now on the paths
    for k in 1 2; do
      python3 -m sweep $common pipeline=dali $compiled hydra.run.dir=$w/runs/dali$k 2>&1 \
        | grep -E " ok | FAILED|Error"
      python3 benchmarks/gpu/summarise_runs.py $w/runs "$OUT/runs_dali.json" | grep "^dali$k "
      python3 benchmarks/gpu/handwritten_dali.py --files $w/j512 --compile 2>&1 | grep -v Warn \
        | tee -a "$OUT/handwritten_dali.txt"
    done ;;
esac
tar czf "$OUT/results_$step.tgz" -C / $(cd / && ls -d tmp/sv/*/result.json tmp/dali-verify/runs/*/result.json 2>/dev/null) 2>/dev/null
true
