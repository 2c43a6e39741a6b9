"""End to end: files -> decode -> preprocess -> host-to-device -> infer -> top-1 on the host.

`measure_end_to_end` runs, on the files of `data.root` (at most `data.max_images`):

1. a reference pass through `pipeline=serial` and the job's runtime, one file at a time through
   the decoder: files PIL cannot decode are counted (`unreadable_files`, examples in info) and
   left out of everything below; its top-1 is the reference for `pipeline_agreement_pct`;
2. a prediction pass through the job's pipeline (the reference pass itself for `serial`):
   `accuracy_top1_pct` against the folder labels, `pipeline_agreement_pct` against step 1; it
   also warms the pipeline up;
3. the uninstrumented run: batches streamed through the pipeline as it is meant to run (prefetch
   and overlap included) with no synchronisation other than reading the top-1 back, until both
   `bench.min_iters` batches (and at least one pass over the files) and `bench.min_seconds`:
   `e2e_ms_per_img`, `e2e_fps`;
4. the instrumented pass, separately, after one untimed batch: the same stages one after
   another with the device synchronised between them, the same stopping rule: `decode_ms`,
   `preprocess_ms`, `h2d_ms`, `infer_ms`, `postprocess_ms` per image. For `serial` they add up
   to about `e2e_ms_per_img`; for `fast` and `gpu` the uninstrumented run overlaps stages, so
   their sum may exceed it. Where the normalisation falls differs: `serial` normalises in
   `preprocess` on the CPU; `fast` copies a uint8 batch and normalises it on the device, both in
   `h2d`; `gpu` normalises on the GPU in `preprocess`, leaving `h2d` next to nothing; `dali`
   runs each stage as a DALI graph of its own (dali.py says what that split hides);
5. the ceilings, in the same process on the same files, the same stopping rule: decode alone
   (`pipe.decoded`, run as the end-to-end run runs it: the same read-ahead, prefetch thread and
   worker processes, so as many decoders side by side) gives `decode_ceiling_fps`; the runtime
   alone, back to back on one batch of the pipeline's output and timed as pure inference is
   (`time_calls`), `infer_ceiling_fps`; the pipeline's input batches alone, as it runs end to
   end without the model, `pipeline_ceiling_fps` (each the faster of its run and step 4's
   figure for its stages: load only slows a pass). `e2e_vs_ceiling_pct` is e2e_fps over the
   lower of decode and inference, and `info.bound_by` names what bounds the job: the lower
   ceiling's stage (`decode` or `inference`) when the end-to-end run reaches BOUND_PCT of it,
   else `host`: neither stage alone. `info.bound_finding` then says what the pipeline ceiling
   shows (`host_note`): the pipeline's own work beyond decoding (resize, normalisation, copies,
   Python), the pipeline and the runtime taking turns (the run no faster than the two one after
   the other: a GPU time-slices the CUDA contexts of the worker processes and the job's unless
   CUDA MPS runs them together, so the finding says whether MPS was on), or their slowing each
   other down otherwise (host cores, the GIL).

The uninstrumented run (step 3) is read by telemetry when the scenario is given a reader (the
job's own, NVML on a GPU and RAPL on a CPU, by default): `e2e_j_per_img`, `e2e_power_w`, the clocks
(`e2e_sm_clock_mhz`, ...) and throttling across the run's own span, or `e2e_cpu_j_per_img` and
`e2e_cpu_power_w` from RAPL; `info.e2e_telemetry` says what read it, or why nothing did.

The runtime was built for one batch size: a last, partial batch is filled by repeating its own
files (the extra predictions are dropped), and the stream wraps around to the first files.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweep.config import SerialPipelineConfig, SweepConfig
from sweep.data import ImageSet, scan
from sweep.env import cuda_mps
from sweep.measure.telemetry import Telemetry, job_telemetry
from sweep.measure.timing import Span, gc_paused, time_calls
from sweep.metrics import STAGES as METRIC_STAGES
from sweep.pipelines import create_pipeline
from sweep.pipelines.base import (
    Pipeline,
    PipelineContext,
    fill,
    pipeline_context,
    preprocessing_text,
    stream_chunks,
    top1,
)
from sweep.pipelines.serial import SerialPipeline
from sweep.scenarios.base import Measurement, Scenario, Workload, postprocess_text

log = logging.getLogger(__name__)

STAGES = tuple(s.removesuffix("_ms") for s in METRIC_STAGES)  # decode, ..., postprocess
STAGE_TIMING = ("separate instrumented pass, synchronised between stages; e2e_ms_per_img and "
                "e2e_fps from an uninstrumented run")
MAX_EXAMPLES = 5
BOUND_PCT = 90.0  # of the lower ceiling: an end-to-end run this close is bound by that stage


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pass_chunks(paths: Sequence[Path], batch: int) -> list[list[Path]]:
    """One pass over `paths` in full batches (the last one filled)."""
    return [fill(paths[i:i + batch], batch) for i in range(0, len(paths), batch)]


Post = Callable[[Any, Sequence[Path]], Any]  # a batch's outputs (and files) -> on the host


def classify_post(out: Any, paths: Sequence[Path]) -> torch.Tensor:
    return top1(out)


def task_post(task: Any, ctx: PipelineContext, sizes: dict[Path, tuple[int, int]]) -> Post:
    """The post-processing stage of a task other than classify: where the outputs are, mapped
    back to each file's own pixels where the pipeline resized by `ctx.resize` (letterbox ...),
    then to the host."""
    from sweep.tasks.geometry import geometry_for

    mode = ctx.resize or "stretch"  # no pipeline.resize: the square resize stretches

    def post(out: Any, paths: Sequence[Path]) -> Any:
        meta = None
        if task.name in ("detect", "segment"):
            meta = [geometry_for(sizes[p], ctx.size, mode) for p in paths]
        return task.to_host(task.postprocess(out, meta))

    return post


def _as_list(preds: Any) -> list:
    return preds.tolist() if isinstance(preds, torch.Tensor) else list(preds)


def reference_pass(ref: Pipeline, runtime: Any, paths: Sequence[Path], batch: int,
                   post: Post = classify_post, sizes: dict[Path, tuple[int, int]] | None = None
                   ) -> tuple[dict[Path, Any], dict[Path, str]]:
    """Top-1 (a task's predictions, through `post`) of each readable file through `ref`, and
    why each other file could not be read; `sizes` gets each readable file's [h, w]."""
    preds: dict[Path, Any] = {}
    unreadable: dict[Path, str] = {}
    pending: list[tuple[Path, Any]] = []

    def flush() -> None:
        x = ref.to_device(ref.preprocess(fill([img for _, img in pending], batch)))
        ys = _as_list(post(runtime.infer(x), fill([p for p, _ in pending], batch)))
        for (path, _), y in zip(pending, ys, strict=False):
            preds[path] = y
        pending.clear()

    for path in paths:
        try:
            pending.append((path, ref.decode([path])[0]))
        except Exception as e:  # any decoder error: the file is counted, the job goes on
            unreadable[path] = f"{type(e).__name__}: {e}"
            continue
        if sizes is not None:
            sizes[path] = (pending[-1][1].height, pending[-1][1].width)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return preds, unreadable


def predict(pipe: Pipeline, runtime: Any, paths: Sequence[Path], batch: int,
            post: Post = classify_post) -> list:
    """Top-1 (a task's predictions) of each of `paths` through the pipeline's own
    (uninstrumented) path."""
    chunks = pass_chunks(paths, batch)
    with closing(pipe.batches(chunks)) as xs:
        preds = [post(runtime.infer(x), chunk) for x, chunk in zip(xs, chunks, strict=True)]
    if preds and isinstance(preds[0], torch.Tensor):
        return torch.cat(preds)[: len(paths)].tolist()
    return [p for batch_preds in preds for p in batch_preds][: len(paths)]


def _enough(batches: int, elapsed: float, need: int, min_seconds: float) -> bool:
    return batches >= need and elapsed >= min_seconds


def time_stream(pipe: Pipeline, runtime: Any, paths: Sequence[Path], batch: int,
                need: int, min_seconds: float, device: torch.device,
                span: Span | None = None, post: Post = classify_post) -> tuple[float, int]:
    """Seconds and images of the uninstrumented run (the first batch's latency included), with
    Python's garbage collector paused as for every timed loop; `span` (telemetry) is told when
    the timed run begins and ends."""
    _sync(device)
    batches, elapsed = 0, 0.0
    chunks = stream_chunks(paths, batch)  # the files of each batch pipe.stream yields
    with gc_paused(), closing(pipe.stream(paths, batch)) as xs:
        if span is not None:
            span.start()
        start = time.perf_counter()
        try:
            for x in xs:
                post(runtime.infer(x), next(chunks))
                batches += 1
                elapsed = time.perf_counter() - start
                if _enough(batches, elapsed, need, min_seconds):
                    break
        finally:
            if span is not None:
                span.stop()
    return elapsed, batches * batch


def time_stages(pipe: Pipeline, runtime: Any, paths: Sequence[Path], batch: int, need: int,
                min_seconds: float, device: torch.device,
                post: Post = classify_post) -> dict[str, float]:
    """Milliseconds per image of each stage, synchronising the device between stages, after one
    untimed batch: with `pipeline.processes`, these steps run in the job's process, whose own
    decoder (nvJPEG's, for pipeline=gpu) the prediction pass never used."""
    totals = dict.fromkeys(STAGES, 0.0)
    batches = 0
    steps = (pipe.decode, pipe.preprocess, pipe.to_device, runtime.infer)  # then top1
    chunks = pass_chunks(paths, batch)
    value: Any = chunks[0]
    for step in steps:  # the warm-up batch
        value = step(value)
    post(value, chunks[0])
    _sync(device)
    with gc_paused():
        start = time.perf_counter()
        for chunk in itertools.cycle(chunks):
            value, marks = chunk, [time.perf_counter()]
            for step in steps:
                value = step(value)
                _sync(device)
                marks.append(time.perf_counter())
            post(value, chunk)
            marks.append(time.perf_counter())
            for stage, t0, t1 in zip(STAGES, marks[:-1], marks[1:], strict=True):
                totals[stage] += t1 - t0
            batches += 1
            if _enough(batches, marks[-1] - start, need, min_seconds):
                break
    return {f"{stage}_ms": 1e3 * total / (batches * batch) for stage, total in totals.items()}


def time_rate(items: Iterator[Any], batch: int, need: int, min_seconds: float,
              device: torch.device) -> float:
    """Images per second of `items` (one per batch) taken back to back after one untimed item,
    the device synchronised at both ends (the garbage collector paused)."""
    batches, elapsed = 0, 0.0
    with gc_paused(), closing(items):
        next(items)
        _sync(device)
        start = time.perf_counter()
        for _ in items:
            batches += 1
            elapsed = time.perf_counter() - start
            if _enough(batches, elapsed, need, min_seconds):
                break
        _sync(device)
        elapsed = time.perf_counter() - start
    return batches * batch / elapsed


def time_decode(pipe: Pipeline, paths: Sequence[Path], batch: int, need: int,
                min_seconds: float, device: torch.device) -> float:
    """Images per second of the pipeline's decoding alone, as it runs end to end."""
    return time_rate(pipe.stream(paths, batch, decoded=True), batch, need, min_seconds, device)


def time_pipeline(pipe: Pipeline, paths: Sequence[Path], batch: int, need: int,
                  min_seconds: float, device: torch.device) -> float:
    """Images per second of the pipeline's input batches alone (no model), as it runs end to
    end."""
    return time_rate(pipe.stream(paths, batch), batch, need, min_seconds, device)


TURNS = {"cpu": "on a CPU the same cores run both",
         "processes": "a GPU time-slices the worker processes' CUDA contexts and the job's "
                      "unless CUDA MPS runs them together; MPS is off here (no daemon seen; "
                      "nvidia-cuda-mps-control -d starts it)",
         "processes_mps": "the worker processes' CUDA contexts and the job's run under CUDA MPS, "
                          "and take turns all the same",
         "thread": "in one process they share the GIL and the GPU's queues"}


def host_note(e2e_fps: float, pipeline_fps: float, infer_fps: float,
              where: str = "processes") -> str:
    """Why a run bound by neither stage is slower: the pipeline's own work beyond decoding, the
    pipeline and the runtime taking turns instead of overlapping (the run no faster than the two
    one after the other; `where` they run says the likely cause, a TURNS key), or their slowing
    each other down otherwise."""
    alone = f"the input pipeline alone (decode to input batch, no model) runs {pipeline_fps:.0f}/s"
    if 100.0 * e2e_fps / pipeline_fps >= BOUND_PCT:
        return f"{alone}: its work beyond decoding (resize, normalisation, copies) bounds the run"
    serial = 1.0 / (1.0 / pipeline_fps + 1.0 / infer_fps)
    alone += f" and the runtime alone {infer_fps:.0f}/s"
    if e2e_fps <= serial * (1.0 + (100.0 - BOUND_PCT) / 100.0):
        return (f"{alone}; one after the other they would run {serial:.0f}/s, and the run is no "
                f"faster: the two take turns instead of overlapping ({TURNS[where]})")
    return (f"{alone}: run together they slow each other down (the host's cores, the GIL, "
            "memory bandwidth)")


def bound_by(e2e_fps: float, decode_fps: float, infer_fps: float) -> tuple[str, float]:
    """What bounds an end-to-end run (decode, inference or host), and its fps as a percentage
    of the lower ceiling."""
    lower = min(decode_fps, infer_fps)
    pct = 100.0 * e2e_fps / lower
    if pct < BOUND_PCT:
        return "host", pct
    return ("decode" if decode_fps <= infer_fps else "inference"), pct


def measure_ceilings(pipe: Pipeline, runtime: Any, paths: Sequence[Path], batch: int,
                     need: int, min_seconds: float, device: torch.device, e2e_fps: float,
                     stages: dict[str, float] | None = None
                     ) -> tuple[dict[str, float], dict[str, Any]]:
    """The decode and inference ceilings and what bounds the run. Each ceiling is the faster of
    its own run and the instrumented pass's figure for that stage (`stages`, ms per image):
    the same work measured twice, and load on the host only ever slows a measurement down."""
    decode_fps = time_decode(pipe, paths, batch, need, min_seconds, device)
    pipeline_fps = time_pipeline(pipe, paths, batch, need, min_seconds, device)
    chunk = pass_chunks(paths, batch)[0]
    x = pipe.to_device(pipe.preprocess(pipe.decode(chunk))).clone()  # its own memory
    # the runtime alone, timed as pure inference is (one warm call, then back to back)
    timing = time_calls(lambda: runtime.infer(x), device, 1, need, min_seconds)
    infer_fps = timing.iters * batch / timing.span_s
    if stages and stages["decode_ms"] > 0 and stages["infer_ms"] > 0:
        decode_fps = max(decode_fps, 1e3 / stages["decode_ms"])
        infer_fps = max(infer_fps, 1e3 / stages["infer_ms"])
        pipeline_fps = max(pipeline_fps, 1e3 / sum(stages.get(f"{s}_ms", 0.0) for s in STAGES[:3]))
    bound, pct = bound_by(e2e_fps, decode_fps, infer_fps)
    metrics = {"decode_ceiling_fps": decode_fps, "infer_ceiling_fps": infer_fps,
               "pipeline_ceiling_fps": pipeline_fps, "e2e_vs_ceiling_pct": pct}
    basis = (f"e2e_fps over the lower of decode-only ({decode_fps:.0f}/s) and inference-only "
             f"({infer_fps:.0f}/s): {pct:.0f}%; at least {BOUND_PCT:.0f}% names that stage, "
             "less the host")
    info = {"bound_by": bound, "bound_basis": basis}
    if bound == "host":
        where = ("cpu" if device.type != "cuda"
                 else ("processes_mps" if cuda_mps() else "processes")
                 if getattr(pipe.cfg, "processes", 0) else "thread")
        info["bound_finding"] = host_note(e2e_fps, pipeline_fps, infer_fps, where)
    return metrics, info


def _examples(reasons: dict[Path, str], images: ImageSet) -> str:
    shown = [f"{images.relative(p)}: {why}" for p, why in list(reasons.items())[:MAX_EXAMPLES]]
    more = len(reasons) - len(shown)
    return "; ".join(shown) + (f" (+{more} more)" if more > 0 else "")


def measure_end_to_end(cfg: SweepConfig, runtime: Any, device: torch.device,
                       telemetry: Telemetry | None = None, task: Any = None
                       ) -> tuple[dict[str, float], dict[str, Any]]:
    """End-to-end metrics and facts of `cfg.pipeline` over `cfg.data` through the prepared
    `runtime` on `device` (see the module docstring); `telemetry` reads the uninstrumented
    run; `task`: the model's sweep.tasks.Task (None or classify: top-1)."""
    ctx = pipeline_context(cfg, runtime, device)
    pipe = create_pipeline(cfg.pipeline, ctx)  # pipeline=gpu on a CPU fails here, before work
    ref = pipe if pipe.name == SerialPipeline.name else SerialPipeline(SerialPipelineConfig(), ctx)
    try:
        if task is not None and task.name != "classify":
            return _measure_task(cfg, runtime, device, pipe, ref, telemetry, task, ctx)
        if cfg.data.name != "imagefolder":
            raise ValueError(f"data={cfg.data.name} holds a detector's or segmenter's labels, "
                             "and this model is a classifier; use data=imagefolder (class "
                             "folders)")
        return _measure(cfg, runtime, device, pipe, ref, telemetry)
    finally:
        pipe.close()
        if ref is not pipe:
            ref.close()


def _measure(cfg: SweepConfig, runtime: Any, device: torch.device, pipe: Pipeline,
             ref: Pipeline, telemetry: Telemetry | None = None
             ) -> tuple[dict[str, float], dict[str, Any]]:
    images = scan(cfg.data.root, cfg.data.max_images)
    info: dict[str, Any] = {
        "stage_timing": STAGE_TIMING, "preprocessing": preprocessing_text(pipe.ctx),
        "data_root": str(images.root), "data_classes": len(images.classes),
        "data_files_found": images.found,
    }
    labels = {path: label for path, label in images.items}
    ref_preds, unreadable = reference_pass(ref, runtime, list(labels), cfg.batch)
    if unreadable:
        info["unreadable_examples"] = _examples(unreadable, images)
        log.warning("%d of %d files under data.root=%s could not be decoded (left out): %s",
                    len(unreadable), len(labels), images.root, info["unreadable_examples"])
    paths = [p for p in labels if p not in unreadable]
    if not paths:
        raise RuntimeError(f"none of the {len(labels)} image files under data.root="
                           f"{images.root} could be decoded: {info['unreadable_examples']}")
    preds = ([ref_preds[p] for p in paths] if pipe is ref
             else predict(pipe, runtime, paths, cfg.batch))
    n = len(paths)
    pairs = list(zip(paths, preds, strict=True))
    metrics: dict[str, float] = {
        "accuracy_top1_pct": 100.0 * sum(y == labels[p] for p, y in pairs) / n,
        "pipeline_agreement_pct": 100.0 * sum(y == ref_preds[p] for p, y in pairs) / n,
        "data_images": float(n), "unreadable_files": float(len(unreadable)),
    }
    info["pipeline_agreement_basis"] = (f"top-1 of pipeline={pipe.name} vs pipeline=serial, "
                                        f"same runtime, same {n} files")
    need = max(cfg.bench.min_iters, math.ceil(n / cfg.batch))
    _time_end_to_end(pipe, runtime, paths, cfg, need, device, telemetry, classify_post,
                     metrics, info)
    if pipe.name == "gpu":
        fallbacks = pipe.stats.cpu_fallbacks
        metrics["cpu_decode_fallbacks"] = float(len(fallbacks))
        if fallbacks:
            counts = Counter(fallbacks.values())
            info["cpu_decode_fallbacks"] = ", ".join(f"{k} {why}" for why, k in counts.items())
    if images.empty_classes:
        info["empty_class_folders"] = ", ".join(images.empty_classes)
        log.warning("data.root=%s: empty class folders (they keep their class index): %s",
                    images.root, info["empty_class_folders"])
    if images.ignored:
        info["ignored_files"] = (f"{images.ignored} files not images by suffix, or outside "
                                 "the class folders")
    if cfg.model.num_classes < len(images.classes):
        info["accuracy_note"] = (f"the model has {cfg.model.num_classes} classes and data.root "
                                 f"{len(images.classes)}: higher labels cannot be predicted")
    if device.type != "cuda" and (cfg.flags.pin_memory or cfg.flags.gpu_non_blocking):
        info["flags_note"] = "pin_memory and gpu_non_blocking have no effect on cpu (no copy)"
    return metrics, info


def _measure_task(cfg: SweepConfig, runtime: Any, device: torch.device, pipe: Pipeline,
                  ref: Pipeline, telemetry: Telemetry | None, task: Any,
                  ctx: PipelineContext) -> tuple[dict[str, float], dict[str, Any]]:
    """`_measure` for a detector, segmenter or raw model: the same runs and ceilings, with the
    task's post-processing as the last stage (boxes or masks on the host end a batch)."""
    files, found = _task_files(cfg)
    info: dict[str, Any] = {
        "stage_timing": STAGE_TIMING, "preprocessing": preprocessing_text(ctx),
        "data_root": str(Path(cfg.data.root)), "data_files_found": found,
        "postprocess": postprocess_text(task, device),
    }
    images = ImageSet(root=Path(cfg.data.root), classes=[], items=[(p, 0) for p in files],
                      found=found)
    sizes: dict[Path, tuple[int, int]] = {}
    post = task_post(task, ctx, sizes)
    ref_preds, unreadable = reference_pass(ref, runtime, files, cfg.batch, post, sizes)
    if unreadable:
        info["unreadable_examples"] = _examples(unreadable, images)
    paths = [p for p in files if p not in unreadable]
    if not paths:
        raise RuntimeError(f"none of the {len(files)} image files under data.root="
                           f"{images.root} could be decoded: {info['unreadable_examples']}")
    preds = (predict(pipe, runtime, paths, cfg.batch, post) if pipe is not ref
             else [ref_preds[p] for p in paths])  # the first pass also warms the pipeline up
    n = len(paths)
    metrics: dict[str, float] = {"data_images": float(n),
                                 "unreadable_files": float(len(unreadable))}
    if cfg.data.name in ("coco", "masks"):
        scores, basis = _accuracy(cfg, task, dict(zip(paths, preds, strict=True)))
        metrics.update(scores)
        info["accuracy_basis"] = basis
    need = max(cfg.bench.min_iters, math.ceil(n / cfg.batch))
    _time_end_to_end(pipe, runtime, paths, cfg, need, device, telemetry, post, metrics, info)
    return metrics, info


def _time_end_to_end(pipe: Pipeline, runtime: Any, paths: Sequence[Path], cfg: SweepConfig,
                     need: int, device: torch.device, telemetry: Any, post: Post,
                     metrics: dict[str, float], info: dict[str, Any]) -> None:
    """The uninstrumented run (with its energy), the stages and the ceilings, into `metrics`
    and `info`: the same timing for every task."""
    seconds, count = time_stream(pipe, runtime, paths, cfg.batch, need, cfg.bench.min_seconds,
                                 device, telemetry, post)
    metrics.update(e2e_ms_per_img=1e3 * seconds / count, e2e_fps=count / seconds)
    if telemetry is not None:
        energy, facts = telemetry.span_result("e2e", count)
        metrics.update(energy)
        info.update(facts)
    stages = time_stages(pipe, runtime, paths, cfg.batch, need, cfg.bench.min_seconds, device,
                         post)
    metrics.update(stages)
    ceilings, bound = measure_ceilings(pipe, runtime, paths, cfg.batch, need,
                                       cfg.bench.min_seconds, device, metrics["e2e_fps"], stages)
    metrics.update(ceilings)
    info.update(bound)
    if pipe.stage_note:
        info["stage_split"] = pipe.stage_note


def _task_files(cfg: SweepConfig) -> tuple[list[Path], int]:
    """The files a task's end-to-end run reads (at most data.max_images), and how many there
    are: an image folder's, a COCO annotations file's images, or a masks folder's images."""
    from sweep.tasks import labels

    root = Path(cfg.data.root)
    if cfg.data.name == "coco":
        files = [root / im["file_name"] for im in labels.read_coco(root)["images"]]
    elif cfg.data.name == "masks":
        files = [image for image, _ in labels.mask_pairs(root)]
    else:
        files = [path for path, _ in scan(cfg.data.root, cfg.data.max_images).items]
    return files[: cfg.data.max_images], len(files)


def _accuracy(cfg: SweepConfig, task: Any, preds: dict[Path, Any]
              ) -> tuple[dict[str, float], str]:
    """mAP (data=coco) or mIoU (data=masks) of the job's predictions, mapped back to each
    image, against the folder's labels; and what was compared, in words."""
    from sweep.tasks import labels

    root = Path(cfg.data.root)
    if cfg.data.name == "coco":
        if task.name != "detect":
            raise ValueError(f"data=coco scores boxes, and this model's task is {task.name}; "
                             "use data=imagefolder, or data=masks for a segmenter")
        ann = labels.read_coco(root)
        ids = {root / im["file_name"]: im["id"] for im in ann["images"]}
        cats = sorted(c["id"] for c in ann["categories"])
        # a YOLO head's class index i is the i-th category; torchvision's labels are COCO ids
        to_id = ((lambda k: cats[k] if k < len(cats) else -1)
                 if task.output_format == "yolo" else (lambda k: k))
        judged = {ids[p]: {**pr, "labels": [to_id(int(k)) for k in pr["labels"]]}
                  for p, pr in preds.items()}
        ann = {**ann, "images": [im for im in ann["images"] if im["id"] in judged]}
        ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] in judged]
        return labels.coco_map(ann, judged), (
            f"pycocotools COCOeval (bbox) of {len(judged)} images' boxes at postprocess.conf="
            f"{cfg.postprocess.conf:g}, mapped back to each image")
    if task.name != "segment":
        raise ValueError(f"data=masks scores masks, and this model's task is {task.name}; use "
                         "data=imagefolder, or data=coco for a detector")
    masks = dict(labels.mask_pairs(root))
    pairs = [(pred.numpy(), labels.read_mask(masks[p])) for p, pred in preds.items()]
    classes = 1 + max(int(max(p.max(), np.where(g == labels.IGNORE, 0, g).max()))
                      for p, g in pairs)
    return labels.miou(pairs, classes), (f"mean IoU over the classes present, {len(pairs)} "
                                         "masks resized back to each image")


class EndToEndScenario(Scenario):
    """Files to top-1 through the job's pipeline, when the data has files; `telemetry` makes the
    reader of the uninstrumented run from the workload (the job's own by default; a test passes
    a stand-in NVML or RAPL folder)."""

    name = "end_to_end"

    def __init__(self, telemetry: Callable[[Workload], Telemetry] | None = None) -> None:
        self.telemetry = telemetry or (lambda work: job_telemetry(work.cfg, work.device))

    @classmethod
    def applies(cls, cfg: SweepConfig) -> bool:
        return cfg.data.name != "synthetic"

    def run(self, work: Workload) -> Measurement:
        metrics, info = measure_end_to_end(work.cfg, work.runtime, work.device,
                                           self.telemetry(work), getattr(work, "task", None))
        return Measurement(metrics, info)
