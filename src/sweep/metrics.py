"""The metric vocabulary: every number a job, a sweep or a report names, with its unit, which
way is better and whether it is a headline column. Scenarios emit these names, the summary puts
the headline ones first in this order, the A/B tables and plots take their labels from here, and
a test checks that every metric a job writes is listed. INFO_KEYS does the same for the words
a job writes into `info`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    lower_is_better: bool | None  # None: neither (a count, a setting)
    headline: bool = False  # a summary column shown before the others, in this order
    label: str = ""  # how tables and plots name it; the name itself when empty
    ab: bool = False  # compared in the A/B tables

    @property
    def title(self) -> str:
        return self.label or self.name


def _m(name: str, unit: str, lower: bool | None, headline: bool = False, label: str = "",
       ab: bool = False) -> Metric:
    return Metric(name, unit, lower, headline, label, ab)


LATENCY_PERCENTILES = {"latency_ms_p50": 50.0, "latency_ms_p90": 90.0, "latency_ms_p99": 99.0,
                       "latency_ms_p999": 99.9}


# measured in rounds (bench.rounds > 1): these keep their per-round values and get a
# between-round 95% CI, `<name>_rounds_ci95_low/_high` (sweep.rounds)
_ROUND_UNITS = {"infer_ms_per_img": "ms", "fps": "images/s", "infer_ms_p50": "ms",
                "e2e_ms_per_img": "ms", "e2e_fps": "images/s", "server_qps": "requests/s",
                "max_qps_at_slo": "requests/s", "latency_ms_p99": "ms", "energy_j_per_img": "J",
                "e2e_j_per_img": "J", "served_j_per_img": "J"}
ROUND_METRICS = tuple(_ROUND_UNITS)

METRICS: tuple[Metric, ...] = (
    # the headline columns, in the order the summary shows them
    _m("infer_ms_per_img", "ms", True, True, "infer ms/image", ab=True),
    _m("infer_ms_per_img_ci95_low", "ms", True, True),
    _m("infer_ms_per_img_ci95_high", "ms", True, True),
    _m("infer_ms_p50", "ms", True, True, "p50 ms/batch"),
    _m("infer_ms_p90", "ms", True, True, "p90 ms/batch"),
    _m("infer_ms_p99", "ms", True, True, "p99 ms/batch"),
    _m("infer_cv_pct", "%", True, True, "CV %"),
    _m("fps", "images/s", False, True, "FPS", ab=True),
    _m("speedup_x", "x", False, True, "speedup"),  # derived by the report
    _m("gpu_busy_pct", "%", False, True, "GPU busy %"),
    _m("gflop_per_img", "GFLOP", None, True),
    _m("tflops", "TFLOPS", False, True, "TFLOPS achieved"),
    _m("tflops_peak", "TFLOPS", None, True, "TFLOPS peak"),
    _m("util_pct", "%", False, True, "util %"),
    _m("e2e_ms_per_img", "ms", True, True, "E2E ms/image", ab=True),
    _m("e2e_fps", "images/s", False, True, "E2E FPS"),
    _m("accuracy_top1_pct", "%", False, True, "accuracy %", ab=True),
    _m("pipeline_agreement_pct", "%", False, True, "agrees with current %"),
    _m("unreadable_files", "files", True, True, "unreadable files"),
    _m("correct", "bool", False, True),
    _m("max_abs_err", "logit", True, True, "max abs err"),
    _m("agreement_top1_pct", "%", False, True, "top-1 agreement %"),
    _m("export_s", "s", True, True),
    _m("first_infer_ms", "ms", True, True),
    _m("host_rss_peak_mb", "MB", True, True),
    _m("gpu_mem_peak_mb", "MB", True, True),
    _m("max_qps_at_slo", "requests/s", False, True, "max qps at SLO"),
    _m("server_qps", "requests/s", False, True, "served qps"),
    _m("latency_ms_p50", "ms", True, True, "p50 latency ms"),
    _m("latency_ms_p99", "ms", True, True, "p99 latency ms"),
    _m("energy_j_per_img", "J", True, True, "J/image", ab=True),
    _m("gpu_power_w", "W", None, True, "GPU W"),
    _m("cpu_energy_j_per_img", "J", True, True, "CPU J/image"),
    # energy across the end-to-end run and the served load run (sweep.measure.telemetry)
    _m("e2e_j_per_img", "J", True, True, "E2E J/image"),
    _m("e2e_cpu_j_per_img", "J", True, True, "E2E CPU J/image"),
    _m("served_j_per_img", "J", True, True, "served J/image"),
    _m("served_cpu_j_per_img", "J", True, True, "served CPU J/image"),
    _m("served_power_w", "W", None, True, "served GPU W"),
    _m("rounds", "rounds", None, True),
    # telemetry across the timed span (NVML on a GPU, RAPL on a CPU)
    _m("img_per_j", "images/J", False, label="images/J"),
    _m("gpu_power_w_max", "W", None),
    _m("gpu_sm_clock_mhz", "MHz", None, label="SM clock MHz"),
    _m("gpu_sm_clock_mhz_min", "MHz", None),
    _m("gpu_sm_clock_mhz_max", "MHz", None),
    _m("gpu_mem_clock_mhz", "MHz", None),
    _m("gpu_temp_c", "C", None, label="GPU max C"),
    _m("gpu_util_pct", "%", None, label="NVML util %"),
    # telemetry across the end-to-end run and the served load run: as above, under the prefix
    *(_m(f"{prefix}_{name}", unit, None, label=f"{tag} {label}")
      for prefix, tag in (("e2e", "E2E"), ("served", "served"))
      for name, unit, label in (
          ("power_w_max", "W", "GPU max W"), ("sm_clock_mhz", "MHz", "SM clock MHz"),
          ("sm_clock_mhz_min", "MHz", "SM clock min MHz"),
          ("sm_clock_mhz_max", "MHz", "SM clock max MHz"),
          ("mem_clock_mhz", "MHz", "mem clock MHz"), ("temp_c", "C", "GPU max C"),
          ("gpu_util_pct", "%", "NVML util %"), ("cpu_power_w", "W", "CPU W"))),
    _m("e2e_power_w", "W", None, label="E2E GPU W"),
    _m("e2e_img_per_j", "images/J", False, label="E2E images/J"),
    _m("served_img_per_j", "images/J", False, label="served images/J"),
    # pure inference, the rest
    _m("infer_ms_mean", "ms", True),
    _m("infer_ms_min", "ms", True),
    _m("infer_iters", "calls", None),
    _m("gpu_ms_per_call", "ms", True),
    _m("gpu_mem_used_mb", "MB", True),
    # correctness against PyTorch fp32
    _m("rel_err", "x logit std", True),
    _m("decisive_pct", "%", None),
    _m("check_samples", "images", None),
    # correctness of detectors, segmenters and any model (sweep.tasks) against the reference
    _m("box_agreement_pct", "%", False, True, "box agreement %"),
    _m("box_iou_mean", "IoU", False, True, "box IoU mean"),
    _m("mask_agreement_pct", "%", False, True, "mask agreement %"),
    _m("box_extra_pct", "%", True, label="extra boxes %"),
    _m("boxes_compared", "boxes", None),
    _m("boxes_predicted", "boxes", None),
    _m("pixels_compared", "pixels", None),
    _m("cosine_min", "cosine", False, label="min cosine"),
    _m("outputs_compared", "outputs", None),
    # accuracy on labels (data=coco, data=masks)
    _m("map_50_95", "mAP", False, True, "mAP 50-95", ab=True),
    _m("map_50", "mAP", False, True, "mAP 50"),
    _m("miou", "IoU", False, True, "mIoU", ab=True),
    _m("pixel_acc", "fraction", False, label="pixel accuracy"),
    # end to end, per image, from the instrumented pass
    _m("decode_ms", "ms", True, label="decode"),
    _m("preprocess_ms", "ms", True, label="preprocess"),
    _m("h2d_ms", "ms", True, label="h2d"),
    _m("infer_ms", "ms", True, label="infer"),
    _m("postprocess_ms", "ms", True, label="postprocess"),
    _m("data_images", "images", None),
    _m("cpu_decode_fallbacks", "files", True),
    # end to end: the ceilings in the same process, and how close the end-to-end run came
    _m("decode_ceiling_fps", "images/s", False, label="decode ceiling FPS"),
    _m("infer_ceiling_fps", "images/s", False, label="inference ceiling FPS"),
    _m("pipeline_ceiling_fps", "images/s", False, label="pipeline ceiling FPS"),
    _m("e2e_vs_ceiling_pct", "%", False, label="E2E % of ceiling"),
    # serving: per request, arrival to top-1 on the host; each percentile with its 95% bounds
    _m("latency_ms_p90", "ms", True, label="p90 latency ms"),
    _m("latency_ms_p999", "ms", True, label="p99.9 latency ms"),
    *(_m(f"{name}_ci95_{side}", "ms", True) for name in LATENCY_PERCENTILES
      for side in ("low", "high")),
    _m("queue_ms_p50", "ms", True, label="p50 queueing ms"),
    _m("batch_fill_pct", "%", False, label="batch fill %"),
    _m("requests", "requests", None),
    *(_m(f"{name}_rounds_ci95_{side}", unit, None) for name, unit in _ROUND_UNITS.items()
      for side in ("low", "high")),
    # a sweep's parent run
    _m("jobs_ok", "jobs", None),
    _m("jobs_failed", "jobs", True),
    _m("wall_s", "s", True),
)

BY_NAME = {m.name: m for m in METRICS}
HEADLINE = [m.name for m in METRICS if m.headline]
AB = [m for m in METRICS if m.ab]
STAGES = ("decode_ms", "preprocess_ms", "h2d_ms", "infer_ms", "postprocess_ms")


def title(name: str) -> str:
    """How a table or a plot names metric `name`."""
    return BY_NAME[name].title if name in BY_NAME else name


def axis_label(name: str) -> str:
    """`FPS (images/s)`: a plot axis for metric `name`."""
    m = BY_NAME.get(name)
    return f"{m.title} ({m.unit})" if m else name


def unknown(names: object) -> list[str]:
    """The names among `names` that the vocabulary does not list."""
    return sorted(n for n in names if n not in BY_NAME)  # type: ignore[attr-defined]


# The `info` vocabulary: every key a job writes into result.json's `info` (facts in words or
# small values, not metrics), with what it says. tests/test_keys.py checks that a real job writes
# only these; the sweep record's own fields (sweep.json) are not job info.
INFO_KEYS: dict[str, str] = {
    # the job and where it ran
    "config_digest": "digest of the job's measured config: a resumed sweep re-runs a job whose "
                     "config changed",
    "resolution_from": "where the input resolution came from (the model's own, or resolution=)",
    "device_used": "the torch device the job ran on",
    "hardware_used": "the hardware entry (sweep/conf/hardware/) whose peaks util_pct uses",
    "hardware_description": "that entry's description",
    "cpu_affinity": "the CPUs the timed span was pinned to (bench.cpu_affinity)",
    "isolation": "`process` when the job ran in a fresh process of its own",
    "assigned_gpu": "the GPU index the job was given (gpus=[...])",
    "rounds_done": "the rounds (bench.rounds) that measured this job",
    "rounds_planned": "how many rounds were asked for",
    "rounds_failed": "round -> error, for rounds that failed",
    "mlflow_run_id": "the job's MLflow run",
    "mlflow_error": "why the job was not logged to MLflow (upload it later)",
    # the model
    "model_file": "model=onnx|exported: the file benchmarked",
    "model_file_sha256": "its content hash (the cache key of what is built from it)",
    "model_input": "its input as read from the file (name, layout, batch, dtype)",
    "model_opset": "model=onnx: the file's ONNX opset",
    "flops_unresolved_nodes": "graph nodes whose FLOPs could not be counted",
    "correctness": "how the outputs compare with PyTorch fp32, in words",
    "task_from": "how the model's task (classify, detect, segment, raw) was decided",
    "flops_counted": "what the FLOP count of a detector, segmenter or raw model covers",
    "postprocess": "what the post-processing stage does and where it runs",
    "accuracy_basis": "data=coco|masks: what map_50_95, map_50 or miou compared",
    "io_binding": "why ONNX Runtime's IO binding was off for this model's outputs",
    # preparing the runtime
    "cache": "artifact cache status of the prepared model: hit, miss, rebuilt or none",
    "exporter": "the ONNX exporter used: torchscript, or dynamo as the fallback",
    "fp32_export_cache": "int8: cache status of the fp32 export it was quantised from",
    "quant": "int8: how the model was quantised and calibrated",
    "quant_preprocessed": "int8 (ONNX Runtime): whether quant_pre_process ran first",
    "provider": "the ONNX Runtime execution provider the session got",
    "providers": "every provider of the session, in order",
    "session_s": "seconds to create the ONNX Runtime session",
    "int8_note": "why int8 on this provider runs fp32 kernels",
    "compile_s": "seconds to compile the model (OpenVINO)",
    "openvino_device": "OpenVINO's device",
    "openvino_streams": "NUM_STREAMS the compiled model got",
    "openvino_threads": "INFERENCE_NUM_THREADS it got",
    "openvino_precision": "INFERENCE_PRECISION_HINT it got",
    "openvino_optimal_requests": "OPTIMAL_NUMBER_OF_INFER_REQUESTS it reports",
    "openvino_compiled_cache": "whether OpenVINO's compiled-model cache held the blob",
    "engine_file": "the TensorRT engine file",
    "engine_mb": "its size in MB",
    "trt_versions": "the TensorRT (and Torch-TensorRT) versions that built it",
    "trt_build": "model=onnx: strongly or weakly typed build, and its flags",
    "trt_profile": "model=onnx: the optimisation profile's shape",
    "compile_mode": "torch.compile's mode",
    "cudagraphs": "whether inductor captured CUDA graphs",
    "fxgraph_cache": "inductor's FX graph cache hits and misses while compiling",
    "inductor_cache_dir": "inductor's cache folder",
    "cache_rebuilt": "why a cached compiled artifact was discarded and built again",
    "cuda_graph": "what runtime.cuda_graph did (captured, or ignored on the CPU)",
    "channels_last": "why flags.channels_last was ignored by this runtime",
    # pure inference
    "bench_s": "seconds of warm-up and timed calls",
    "bound": "GPU-bound, or how much of a call the host took",
    "util_basis": "which peak util_pct is a share of, or why there is none",
    "stability": "why the timing may not be stable (CV, clock events)",
    "telemetry": "how power and clocks were read (NVML or RAPL, samples, interval)",
    "telemetry_missing": "readings that were not available, and why",
    "cpu_energy": "how CPU energy was read (RAPL package zones), or why it was not",
    "clock_events": "NVML clock event reasons seen during the timed span",
    "throttle": "the throttling reasons among them",
    **{f"{span}_{key}": f"{what}, for the {where}" for span, where in (
        ("e2e", "end-to-end run"), ("served", "serving run reported"))
       for key, what in (("telemetry", "how power and clocks were read, or why nothing was"),
                         ("telemetry_missing", "readings that were not available, and why"),
                         ("clock_events", "NVML clock event reasons seen"),
                         ("throttle", "the throttling reasons among them"))},
    # end to end
    "stage_timing": "how the per-stage times were measured",
    "preprocessing": "the preprocessing every pipeline applies",
    "data_root": "the image folder read",
    "data_classes": "how many class folders it has",
    "data_files_found": "image files found before data.max_images",
    "pipeline_agreement_basis": "what pipeline_agreement_pct compares",
    "unreadable_examples": "some files that could not be decoded",
    "stage_split": "how this pipeline's stages split the work",
    "cpu_decode_fallbacks": "pipeline=gpu: files decoded on the CPU instead, by reason",
    "empty_class_folders": "class folders without images",
    "ignored_files": "files that are not images or lie outside a class folder",
    "accuracy_note": "why accuracy may not mean much (classes of model and data differ)",
    "flags_note": "flags that have no effect on this device",
    "bound_by": "the stage that bounds the end-to-end rate: decode, infer or host",
    "bound_basis": "the ceilings that decision compares",
    "bound_finding": "bound_by=host: what the ceilings say about why",
    # serving
    "batching": "how the dynamic batcher pads a partial batch",
    "in_flight": "batches queued on the device at once",
    "request": "what one request is (a file through the pipeline, or a ready tensor)",
    "load_curve": "JSON of every load step: offered and served rate, latency",
    "overloaded": "why no latency is reported for the load",
    "target_qps_used": "the arrival rate used when scenario.target_qps was unset",
    "slo": "the SLO searched for",
    "capacity_qps": "requests/s of full batches back to back",
    "slo_result": "why no arrival rate met the SLO",
}


def unknown_info(keys: object) -> list[str]:
    """The keys among `keys` that INFO_KEYS does not list."""
    return sorted(k for k in keys if k not in INFO_KEYS)  # type: ignore[attr-defined]
