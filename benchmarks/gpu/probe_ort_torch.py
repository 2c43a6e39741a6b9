"""Find why the ONNX Runtime and eager adapters trail ANCHORS.md: time the same models under
variants of the settings, standalone (no hydra/mlflow needed on the device).

    PYTHONPATH=/tmp/ort python3 benchmarks/gpu/probe_ort_torch.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torchvision


def cuda_fps(fn, batch, iters=100, warmup=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return iters * batch / (time.perf_counter() - t0)


def torch_variants():
    for name, res in (("resnet18", 256), ("resnet50", 224)):
        for batch in (1, 32):
            for bench in (False, True):
                torch.backends.cudnn.benchmark = bench
                torch.backends.cudnn.allow_tf32 = False
                m = torchvision.models.get_model(name).cuda().eval()
                x = torch.randn(batch, 3, res, res, device="cuda")
                with torch.inference_mode():
                    fps = cuda_fps(lambda: m(x), batch)  # noqa: B023 (called at once)
                    mh = m.half().to(memory_format=torch.channels_last)
                    xh = x.half().contiguous(memory_format=torch.channels_last)
                    fps16 = cuda_fps(lambda: mh(xh), batch)  # noqa: B023
                print(f"torch {name} {res} b{batch} cudnn.benchmark={bench}: fp32 {fps:,.0f} "
                      f"fp16-cl {fps16:,.0f} img/s", flush=True)
    torch.backends.cudnn.benchmark = False


def ort_variants():
    import onnxruntime as ort

    ort.preload_dlls()
    print("onnxruntime", ort.__version__, ort.get_available_providers(), flush=True)
    for name, res in (("resnet18", 256), ("resnet50", 224)):
        for half in (False, True):
            m = torchvision.models.get_model(name).eval()
            x = torch.randn(2, 3, res, res)
            if half:
                m, x = m.half(), x.half()
            path = f"/tmp/{name}-{'fp16' if half else 'fp32'}.onnx"
            torch.onnx.export(m, (x,), path, input_names=["input"], output_names=["logits"],
                              opset_version=18, dynamo=False,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            dt = torch.float16 if half else torch.float32
            npdt = np.float16 if half else np.float32
            for batch in (32, 1):
                xin = torch.randn(batch, 3, res, res, device="cuda", dtype=dt)
                out = torch.empty(batch, 1000, device="cuda", dtype=dt)
                stream = torch.cuda.Stream()
                for label, opts, user_stream in (
                    ("ours: stream+nhwc+tf32off", {"prefer_nhwc": "1", "use_tf32": "0"}, True),
                    ("nhwc tf32off", {"prefer_nhwc": "1", "use_tf32": "0"}, False),
                    ("nhwc tf32on", {"prefer_nhwc": "1", "use_tf32": "1"}, False),
                    ("nchw tf32off", {"prefer_nhwc": "0", "use_tf32": "0"}, False),
                    ("nchw tf32on", {"prefer_nhwc": "0", "use_tf32": "1"}, False),
                    ("stream nchw tf32off", {"prefer_nhwc": "0", "use_tf32": "0"}, True),
                ):
                    if half and "tf32on" in label:
                        continue
                    o = dict(opts, device_id="0")
                    if user_stream:
                        o.update(has_user_compute_stream="1", user_compute_stream=str(stream.cuda_stream))
                    so = ort.SessionOptions()
                    so.log_severity_level = 3
                    s = ort.InferenceSession(path, so, providers=[("CUDAExecutionProvider", o)])
                    b = s.io_binding()
                    b.bind_input("input", "cuda", 0, npdt, tuple(xin.shape), xin.data_ptr())
                    b.bind_output("logits", "cuda", 0, npdt, tuple(out.shape), out.data_ptr())
                    fps = cuda_fps(lambda b=b, s=s: s.run_with_iobinding(b), batch, iters=50)
                    print(f"ort {name} {res} {'fp16' if half else 'fp32'} b{batch} {label}: "
                          f"{fps:,.0f} img/s", flush=True)
                    del s


if __name__ == "__main__":
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    torch_variants()
    ort_variants()
