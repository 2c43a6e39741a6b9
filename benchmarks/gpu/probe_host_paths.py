"""Where the host's time goes, in one process on the lent GPU, variants alternated (the order
rotates each round). Three questions of issues 16 and 13:

  e2e     pipeline=gpu in the job's process (eager resnet18 256 fp16 b32, 256 files of 512x512)
          ran 0.61-0.82x the hand-written loop (handwritten_e2e.py). Variants, all through the
          tool's own TorchRuntime and top-1:
            hand          JPEGs held in memory, decode_jpeg(list), the hand's resize and
                          normalisation (handwritten_e2e.py's "batched")
            hand_read     the same, each batch's files read in this thread (read_file)
            tool_inline   the tool's stages called one after another in this thread: reads and
                          header checks, decode, the tool's preprocess
            tool_pf0      GpuPipeline.batches with prefetch 0 (a read-ahead thread)
            tool_pf2      GpuPipeline.batches with prefetch 2 (and a preparing thread)
  pre     the GPU time of preprocessing one decoded batch (32 x 512x512 -> 256, fp16), CUDA
          events around calls queued back to back: the tool's resize_levels + normalize_batch,
          the hand's chain, and the tool's chain with its pointwise tail fused by torch.compile;
          with the batched decode's host-timed rate beside it
  pre2    the same batch: the tool's chain op by op, and a separable resize from PyTorch's own
          antialiasing weights (gathered taps), eager and fused by torch.compile (static and
          dynamic shapes), with how many output values differ from the tool's
  single  resnet50 224 fp16 b1, one request at a time to its top-1 on the host, against the same
          call's offline per-call GPU time (events, back to back): torch.compile reduce-overhead
          (CUDA graph trees), and a torch.cuda.CUDAGraph captured around torch.compile's
          default mode and around eager, replayed directly

    python3 benchmarks/gpu/probe_host_paths.py --files DIR [--sections e2e,pre,single]
        [--rounds 3] [--out probe.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from sweep.config import GpuPipelineConfig
from sweep.measure.timing import gc_paused
from sweep.pipelines.base import normalize_batch, stream_chunks, top1
from sweep.pipelines.gpu import GpuPipeline, PipelineContext, resize_levels
from sweep.runtimes.base import JobContext
from sweep.runtimes.torch_eager import TorchRuntime

BATCH, RES = 32, 256
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def rate(step, seconds: float) -> float:
    """Images per second of `step(i)` called back to back for `seconds` (after 3 untimed)."""
    for i in range(3):
        step(i)
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(n)
        n += 1
    torch.cuda.synchronize()
    return n * BATCH / (time.perf_counter() - t0)


def rotate(names: list[str], r: int) -> list[str]:
    k = r % len(names)
    return names[k:] + names[:k]


# --- e2e ------------------------------------------------------------------------------------


def e2e(files: Path, rounds: int, seconds: float) -> dict:
    dev = torch.device("cuda")
    paths = sorted(files.rglob("*.jpg"))
    mem = [read_file(str(p)) for p in paths[:64]]
    ctx = JobContext(device=dev, precision="fp16", batch=BATCH, resolution=RES,
                     channels_last=False, cache=None)
    rt = TorchRuntime(None, ctx)  # type: ignore[arg-type]
    rt.prepare(torchvision.models.resnet18().eval(), torch.zeros(BATCH, 3, RES, RES))
    pctx = PipelineContext(device=dev, batch=BATCH, resolution=RES, dtype=torch.float16,
                           memory_format=torch.contiguous_format)
    mean, std = MEAN.to(dev), STD.to(dev)

    def hand_pre(encoded: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=dev)).float()
        x = F.interpolate(x, size=(RES, RES), mode="bilinear", antialias=True)
        return ((x - mean) / std).half()

    chunks = [paths[i:i + BATCH] for i in range(0, len(paths), BATCH)]
    inline = GpuPipeline(GpuPipelineConfig(processes=0, prefetch=0), pctx)

    def hand(i: int) -> None:
        s = (i * BATCH) % len(mem)
        top1(rt.infer(hand_pre((mem + mem)[s:s + BATCH])))

    def hand_read(i: int) -> None:
        top1(rt.infer(hand_pre([read_file(str(p)) for p in chunks[i % len(chunks)]])))

    def tool_inline(i: int) -> None:
        reads = inline._read_batch(chunks[i % len(chunks)])
        top1(rt.infer(inline.to_device(inline.preprocess(inline._decode_reads(reads)))))

    def streamed(prefetch: int) -> float:
        pipe = GpuPipeline(GpuPipelineConfig(processes=0, prefetch=prefetch), pctx)
        try:
            with closing(pipe.batches(stream_chunks(paths, BATCH))) as xs:
                it = iter(xs)
                return rate(lambda i: top1(rt.infer(next(it))), seconds)
        finally:
            pipe.close()

    variants = {"hand": lambda: rate(hand, seconds), "hand_read": lambda: rate(hand_read, seconds),
                "tool_inline": lambda: rate(tool_inline, seconds),
                "tool_pf0": lambda: streamed(0), "tool_pf2": lambda: streamed(2)}
    out: dict[str, list[float]] = {k: [] for k in variants}
    with gc_paused():
        for r in range(rounds):
            for name in rotate(list(variants), r):
                out[name].append(variants[name]())
                print(f"e2e round {r + 1} {name:12s} {out[name][-1]:8.0f} img/s", flush=True)
    inline.close()
    return out


# --- pre ------------------------------------------------------------------------------------


def gpu_us(fn, calls: int = 200) -> float:
    """Median GPU microseconds of `fn()` queued back to back (events around each call)."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
          for _ in range(calls)]
    for a, b in ev:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return 1e3 * statistics.median(a.elapsed_time(b) for a, b in ev)


def pre(files: Path, rounds: int) -> dict:
    dev = torch.device("cuda")
    paths = sorted(files.rglob("*.jpg"))[:BATCH]
    enc = [read_file(str(p)) for p in paths]
    imgs = decode_jpeg(enc, mode=ImageReadMode.RGB, device=dev)
    mean, std = MEAN.to(dev), STD.to(dev)

    def tool() -> torch.Tensor:
        return normalize_batch(resize_levels(imgs, RES), torch.float16, torch.contiguous_format)

    def hand() -> torch.Tensor:
        x = F.interpolate(torch.stack(imgs).float(), size=(RES, RES), mode="bilinear",
                          antialias=True)
        return ((x - mean) / std).half()

    m255, s255 = (MEAN / 255).to(dev), (STD / 255).to(dev)

    def tail(levels: torch.Tensor) -> torch.Tensor:  # the tool's tail, as normalize_batch does it
        x = levels.round().clamp(0, 255).div(255)
        return x.sub(m255).div(s255).to(torch.float16)

    fused_tail = torch.compile(tail)

    def fused() -> torch.Tensor:
        levels = F.interpolate(torch.stack(imgs).float(), size=(RES, RES), mode="bilinear",
                               align_corners=False, antialias=True)
        return fused_tail(levels)

    diff = (fused().float() - tool().float()).abs().max().item()
    decode_rate = rate(lambda i: decode_jpeg(enc, mode=ImageReadMode.RGB, device=dev), 1.0)
    variants = {"tool": tool, "hand": hand, "fused_tail": fused}
    out: dict = {k: [] for k in variants}
    for r in range(rounds):
        for name in rotate(list(variants), r):
            out[name].append(gpu_us(variants[name]))
            print(f"pre round {r + 1} {name:12s} {out[name][-1]:8.1f} us GPU per batch of "
                  f"{BATCH}", flush=True)
    out["fused_vs_tool_max_abs_diff"] = diff
    out["decode_batched_img_s"] = decode_rate
    print(f"pre fused vs tool max |diff| {diff:g}; batched decode {decode_rate:.0f} img/s",
          flush=True)
    return out


def aa_taps(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's antialiased-bilinear weights from n_in to n_out samples as taps (index and
    weight [n_out, K]): read off by resizing the rows of an identity matrix."""
    eye = torch.eye(n_in, dtype=torch.float32, device=device).view(n_in, 1, 1, n_in)
    w = F.interpolate(eye, size=(1, n_out), mode="bilinear", align_corners=False,
                      antialias=True).view(n_in, n_out).t()
    nz = w != 0
    k = int(nz.sum(1).max())
    first = nz.float().argmax(1)
    span = first[:, None] + torch.arange(k, device=device)
    idx = span.clamp(max=n_in - 1)
    wt = torch.gather(w, 1, idx)
    wt[span > n_in - 1] = 0
    return idx, wt


def sep_chain(x: torch.Tensor, ix: torch.Tensor, wx: torch.Tensor, iy: torch.Tensor,
              wy: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    h = (x[..., ix].float() * wx).sum(-1)
    v = (h[..., iy, :] * wy[:, :, None]).sum(-2)
    return v.round().clamp(0, 255).div(255).sub(m).div(s).to(torch.float16)


def pre2(files: Path, rounds: int) -> dict:
    dev = torch.device("cuda")
    paths = sorted(files.rglob("*.jpg"))[:BATCH]
    imgs = decode_jpeg([read_file(str(p)) for p in paths], mode=ImageReadMode.RGB, device=dev)
    stacked = torch.stack(imgs)
    h, w = stacked.shape[-2:]
    ix, wx = aa_taps(int(w), RES, dev)
    iy, wy = aa_taps(int(h), RES, dev)
    m255, s255 = (MEAN / 255).to(dev), (STD / 255).to(dev)
    x32 = stacked.float()
    aa = F.interpolate(x32, size=(RES, RES), mode="bilinear", align_corners=False,
                       antialias=True)
    ops = {"op_stack": lambda: torch.stack(imgs), "op_float": lambda: stacked.float(),
           "op_aa": lambda: F.interpolate(x32, size=(RES, RES), mode="bilinear",
                                          align_corners=False, antialias=True),
           "op_round": lambda: aa.clone().round_(), "op_clone": lambda: aa.clone(),
           "op_to_fp16": lambda: aa.to(torch.float16),
           "op_stack_into_float": lambda: torch.stack(imgs, out=x32)}
    static = torch.compile(sep_chain, dynamic=False)
    dyn = torch.compile(sep_chain, dynamic=True)

    def tool() -> torch.Tensor:
        return normalize_batch(resize_levels(imgs, RES), torch.float16, torch.contiguous_format)

    def tool_stack_out() -> torch.Tensor:  # the tool's chain, stacked straight into float32
        levels = F.interpolate(torch.stack(imgs, out=torch.empty_like(x32)), size=(RES, RES),
                               mode="bilinear", align_corners=False, antialias=True)
        return normalize_batch(levels.round_().clamp_(0, 255), torch.float16,
                               torch.contiguous_format)

    variants = {"tool": tool, "tool_stack_out": tool_stack_out,
                "sep_eager": lambda: sep_chain(torch.stack(imgs), ix, wx, iy, wy, m255, s255),
                "sep_static": lambda: static(torch.stack(imgs), ix, wx, iy, wy, m255, s255),
                "sep_dynamic": lambda: dyn(torch.stack(imgs), ix, wx, iy, wy, m255, s255)}
    ref = tool().float()
    out: dict = {}
    for name, fn in variants.items():
        t0 = time.perf_counter()
        y = fn().float()
        torch.cuda.synchronize()
        out[f"{name}_first_call_s"] = time.perf_counter() - t0
        out[f"{name}_differ_share"] = (y != ref).float().mean().item()
        out[f"{name}_max_abs_diff"] = (y - ref).abs().max().item()
    for name, fn in ops.items():
        out[name] = gpu_us(fn)
    for r in range(rounds):
        for name in rotate(list(variants), r):
            out.setdefault(name, []).append(gpu_us(variants[name]))
            print(f"pre2 round {r + 1} {name:12s} {out[name][-1]:8.1f} us GPU per batch",
                  flush=True)
    print("pre2 " + json.dumps({k: v for k, v in out.items() if not isinstance(v, list)}),
          flush=True)
    return out


# --- single ----------------------------------------------------------------------------------


def single(rounds: int, requests: int) -> dict:
    dev = torch.device("cuda")
    model = torchvision.models.resnet50().eval().to(dev, torch.float16,
                                                    memory_format=torch.channels_last)
    x = torch.randn(1, 3, 224, 224, device=dev).half().contiguous(
        memory_format=torch.channels_last)
    pool = torch.randn(64, 3, 224, 224, device=dev).half().contiguous(
        memory_format=torch.channels_last)
    host = torch.empty(1, 1000, dtype=torch.float16, pin_memory=True)

    with torch.inference_mode():
        ro = torch.compile(model, mode="reduce-overhead")

        def call_ro(inp: torch.Tensor) -> torch.Tensor:
            torch.compiler.cudagraph_mark_step_begin()
            return ro(inp)

        for _ in range(5):
            call_ro(x)

        def graphed(fn):
            static_in = x.clone()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    fn(static_in)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                static_out = fn(static_in)

            def call(inp: torch.Tensor) -> torch.Tensor:
                static_in.copy_(inp)
                g.replay()
                return static_out
            return call

        default = torch.compile(model)
        for _ in range(3):
            default(x)
        calls = {"reduce_overhead": call_ro, "graph_compiled": graphed(default),
                 "graph_eager": graphed(model)}

        def one_at_a_time(call) -> list[float]:
            lat = []
            for i in range(requests):
                t0 = time.perf_counter()
                out = call(pool[i % 64:i % 64 + 1])
                host.copy_(out, non_blocking=True)
                ev = torch.cuda.Event()
                ev.record()
                ev.synchronize()
                host.float().argmax(1)
                lat.append(1e3 * (time.perf_counter() - t0))
            return lat

        def offline(call) -> list[float]:
            ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(500)]
            for a, b in ev:
                a.record()
                call(x)
                b.record()
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in ev]

        out: dict = {k: [] for k in calls}
        with gc_paused():
            for r in range(rounds):
                for name in rotate(list(calls), r):
                    call = calls[name]
                    for _ in range(20):
                        call(x)
                    torch.cuda.synchronize()
                    lat = np.array(one_at_a_time(call))
                    off = np.array(offline(call))
                    row = {"single_p50": float(np.percentile(lat, 50)),
                           "single_p99": float(np.percentile(lat, 99)),
                           "offline_p50": float(np.percentile(off, 50)),
                           "offline_p99": float(np.percentile(off, 99))}
                    row["ratio_p99"] = row["single_p99"] / row["offline_p99"]
                    out[name].append(row)
                    print(f"single round {r + 1} {name:16s} " + " ".join(
                        f"{k} {v:.3f}" for k, v in row.items()), flush=True)
        ref = call_ro(x).float()
        out["max_abs_diff_vs_reduce_overhead"] = {
            k: (calls[k](x).float() - ref).abs().max().item() for k in calls}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=Path, required=True)
    p.add_argument("--sections", default="e2e,pre,single")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path("probe_host_paths.json"))
    a = p.parse_args()
    print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name(), flush=True)
    res: dict = {}
    for section in a.sections.split(","):
        if section == "e2e":
            res["e2e"] = e2e(a.files, a.rounds, a.seconds)
        elif section == "pre":
            res["pre"] = pre(a.files, a.rounds)
        elif section == "pre2":
            res["pre2"] = pre2(a.files, a.rounds)
        elif section == "single":
            res["single"] = single(a.rounds, a.requests)
        a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
