"""Does JPEG decoding on the GPU overlap the inference? Issue 4's open question, measured.

pipeline=gpu's end to end took about the sum of its parts (probe_e2e.py). This probe times each
foreground (resnet18 256 bs32 fp16 inference: eager on the default stream, eager on a stream of
its own, and a CUDA graph) alone and then while a background thread loops one piece of the
pipeline on a side stream, and the background piece alone and during the overlap:

    tv-decode   torchvision.io.decode_jpeg(batch, device='cuda') on in-memory bytes
    nvimg       nvImageCodec's batched decode (hardware backend) of the same bytes, when
                nvidia-nvimgcodec and an nvJPEG library are importable
    reads       torchvision.io.read_file of the batch's files (host only)
    resize      the batch's antialiased GPU resize to 256 (GPU only)
    python      pure Python (holds the GIL)

With overlap, both sides keep their alone times; a side that slows by about the other's time is
serialised with it. Then a torch.profiler trace (CUDA runtime and driver calls, kernels) of eager
inference beside each decoder is summarised (synchronising calls, allocations) and written to
$OUT (or .) as trace_<decoder>.json.gz.

    PYTHONPATH=src python3 benchmarks/gpu/probe_overlap.py DIR
"""

from __future__ import annotations

import gzip
import os
import shutil
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from probe_common import ms_per_step, resnet18_and_graph  # isort: skip

BATCH, RES, SECONDS = 32, 256, 1.5


class Background:
    """`work()` looped in a thread of its own, on a side stream, while the block runs."""

    def __init__(self, work: Callable[[], object]) -> None:
        self.work, self.stop, self.n = work, threading.Event(), 0

    def __enter__(self) -> Background:
        side = torch.cuda.Stream()

        def run() -> None:
            with torch.cuda.stream(side):
                while not self.stop.is_set():
                    self.work()
                    side.synchronize()
                    self.n += 1

        self.thread = threading.Thread(target=run, daemon=True)
        self.t0 = time.perf_counter()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.ms = 1e3 * (time.perf_counter() - self.t0) / max(self.n, 1)
        torch.cuda.synchronize()


def main() -> None:
    root = Path(sys.argv[1])
    out = Path(os.environ.get("OUT", "."))
    paths = sorted(root.rglob("*.jpg"))
    chunks = [paths[i:i + BATCH] for i in range(0, len(paths) - BATCH + 1, BATCH)]
    encoded = [[read_file(str(p)) for p in chunk] for chunk in chunks]
    print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name(),
          f"{len(paths)} files", flush=True)

    model, x, replay = resnet18_and_graph(BATCH, RES)
    own = torch.cuda.Stream()

    def eager() -> object:
        with torch.inference_mode():
            return model(x).argmax(1).cpu()

    def eager_own_stream() -> object:
        with torch.cuda.stream(own):
            return eager()

    def graphed() -> object:
        return replay().argmax(1).cpu()

    counter = {"i": 0}

    def next_index() -> int:
        counter["i"] = (counter["i"] + 1) % len(chunks)
        return counter["i"]

    def tv_decode() -> object:
        return decode_jpeg(encoded[next_index()], mode=ImageReadMode.RGB, device="cuda")

    def reads() -> object:
        return [read_file(str(p)) for p in chunks[next_index()]]

    big = torch.stack(tv_decode())  # type: ignore[arg-type]

    def resize() -> object:
        return torch.nn.functional.interpolate(big.float(), size=(RES, RES), mode="bilinear",
                                               antialias=True)

    def python() -> object:
        return sum(range(20000))

    backgrounds: dict[str, Callable[[], object]] = {"tv-decode": tv_decode}
    try:
        from nvidia import nvimgcodec

        decoder = nvimgcodec.Decoder(device_id=0, backends=[
            nvimgcodec.Backend(nvimgcodec.BackendKind.HW_GPU_ONLY),
            nvimgcodec.Backend(nvimgcodec.BackendKind.GPU_ONLY)])
        params = nvimgcodec.DecodeParams(color_spec=nvimgcodec.ColorSpec.SRGB,
                                         sample_format=nvimgcodec.SampleFormat.P_RGB)
        streams = [[nvimgcodec.CodeStream(t.numpy()) for t in chunk] for chunk in encoded]

        def nvimg() -> object:
            images = decoder.decode(streams[next_index()], params=params,
                                    cuda_stream=torch.cuda.current_stream().cuda_stream)
            return [torch.from_dlpack(img) for img in images]

        first = nvimg()
        torch.cuda.synchronize()
        ref = tv_decode()
        diff = max((a.int() - b.int()).abs().max().item() for a, b in zip(first, ref, strict=True))
        print(f"nvimgcodec {nvimgcodec.__version__}: shape {tuple(first[0].shape)} "
              f"{first[0].dtype}, max |nvimg - torchvision| = {diff} (different batches: "
              "compare only when the set repeats)", flush=True)
        backgrounds["nvimg"] = nvimg
    except Exception as e:  # noqa: BLE001 - reported, the rest of the probe goes on
        print(f"nvimgcodec not used: {type(e).__name__}: {e}", flush=True)
    backgrounds.update(reads=reads, resize=resize, python=python)

    foregrounds = {"eager": eager, "eager-own-stream": eager_own_stream, "graph": graphed}
    alone_fg = {k: ms_per_step(f, SECONDS) for k, f in foregrounds.items()}
    alone_bg = {}
    for k, f in backgrounds.items():
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            alone_bg[k] = ms_per_step(lambda f=f, side=side: (f(), side.synchronize()), SECONDS)
    print("alone, ms per batch:", {k: round(v, 3) for k, v in {**alone_fg, **alone_bg}.items()})
    print(f"{'foreground':18s}{'background':12s}{'fg alone':>9s}{'fg with':>9s}"
          f"{'bg alone':>9s}{'bg with':>9s}")
    for fk, fg in foregrounds.items():
        for bk, bg in backgrounds.items():
            with Background(bg) as b:
                time.sleep(0.05)
                with_ms = ms_per_step(fg, SECONDS)
            print(f"{fk:18s}{bk:12s}{alone_fg[fk]:9.3f}{with_ms:9.3f}{alone_bg[bk]:9.3f}"
                  f"{b.ms:9.3f}", flush=True)

    from torch.profiler import ProfilerActivity, profile

    watch = ("Synchronize", "Malloc", "Free", "HostAlloc", "MemAlloc", "MemFree", "HostRegister",
             "Memset", "Memcpy", "EventSynchronize", "StreamWait", "CtxSynchronize")
    for bk in [k for k in ("tv-decode", "nvimg") if k in backgrounds]:
        with Background(backgrounds[bk]) as b, profile(
                activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            time.sleep(0.05)
            for _ in range(20):
                eager()
        calls: dict[str, list[float]] = defaultdict(list)
        for ev in prof.events():
            if any(w in ev.name for w in watch):
                calls[ev.name].append(ev.cpu_time_total / 1e3)
        print(f"-- profile: eager x20 beside {bk} ({b.n} background batches): runtime/driver "
              "calls that synchronise, allocate or copy: name count total_ms max_ms")
        for name, times in sorted(calls.items(), key=lambda kv: -sum(kv[1])):
            print(f"   {name:40s}{len(times):6d}{sum(times):10.3f}{max(times):9.3f}")
        trace = out / f"trace_{bk}.json"
        prof.export_chrome_trace(str(trace))
        with open(trace, "rb") as src, gzip.open(f"{trace}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        trace.unlink()


if __name__ == "__main__":
    main()
