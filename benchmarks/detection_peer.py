"""A YOLO11n ONNX file measured end to end from JPEG files by this tool (`python -m sweep`) and by
Ultralytics' own `predict`, on the same file, the same frames and the same machine, alternated
(tool, peer, tool, peer, ...), each run a fresh process.

Ultralytics is AGPL and never a dependency of this project: the script makes a scratch virtual
environment of its own (`--venv`, reused when present; `--system-site-packages`, so the base
interpreter's torch, onnx and onnxruntime are the ones it runs) and pip-installs `ultralytics`
and `onnxslim` there. YOLO11n is built from its YAML (random weights, nothing downloaded) and
exported there to ONNX at the tool's opset, 640x640: a batch-1 static file and a dynamic one.
Ultralytics runs with YOLO_OFFLINE=1 (no online checks), YOLO_AUTOINSTALL=0 (it installs nothing
behind the script's back) and YOLO_CONFIG_DIR inside the venv (its settings file stays there).

Both sides run ONNX Runtime with the same provider and the same thread count, set explicitly:
the tool through `runtime.intra_op_threads` / `runtime.inter_op_threads=1`, Ultralytics through
its session's SessionOptions (its ONNX backend builds the session with none, so the peer process
wraps `onnxruntime.InferenceSession` to pass them); OMP_NUM_THREADS and torch's threads are the
same count on both sides (torch does both sides' letterbox tensors and NMS). Both use the same
NMS settings (`--conf`, `--iou`, `--max-det`; Ultralytics' predict defaults).

The bar (issue 33), per pair, at batch 1 with the same runtime and provider: the tool's
inference-only latency (`infer_ms_per_img`) within 5% of the inference time Ultralytics reports
(`speed['inference']`, mean per image); the tool's end-to-end latency per image (`e2e_ms_per_img`:
decode, letterbox, inference, NMS, boxes on the host) no higher than Ultralytics' preprocess +
inference + postprocess (which leaves out its JPEG decode; its wall-clock img/s includes it).

    python benchmarks/detection_peer.py [--frames 64] [--pairs 2] [--threads 2] [--seconds 5]
        [--venv DIR | --peer-site DIR] [--work DIR] [--pipelines serial [gpu]] [--gpu]
        [--batch 1 [32]] [--peer-only]
        [--out benchmarks/results/detection_peer_cpu]

The tool side needs the detection wiring of issue 33 (`model.output_format=yolo`,
`resolution=[h,w]`, `pipeline.resize=letterbox`, `postprocess.*`); where the sweep on the path
refuses that configuration the script stops and says so (`--peer-only` measures Ultralytics
alone). `--gpu`: ONNX Runtime's CUDA provider on both sides, batch 1 and 32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve()
TMP = Path(os.environ.get("TMPDIR") or tempfile.gettempdir())
FRAME_SIZE = (1280, 720)  # width, height: a camera frame
IMGSZ = 640
BAR_INFER = 0.05  # the tool's inference within 5% of Ultralytics'
PEER_PACKAGES = ("ultralytics", "onnxslim")  # onnxslim: Ultralytics' default export simplifies
STAGES = ("decode_ms", "preprocess_ms", "h2d_ms", "infer_ms", "postprocess_ms")
TOOL_INFO = ("provider", "providers", "model_input", "task_from", "preprocessing", "postprocess",
             "stage_timing", "correctness", "bound_by", "bound_finding", "stability", "pipeline")


def tool_opset() -> int:
    """The opset the tool exports at (its runtime.onnx default), so both files match its own."""
    try:
        from sweep.config import OnnxRuntimeConfig
    except ImportError:
        return 18
    return OnnxRuntimeConfig().opset


@dataclass(frozen=True)
class Peer:
    """Where Ultralytics runs: the scratch venv's interpreter, or (`--peer-site`, on a machine
    that reaches no package index) this interpreter with a folder of pip --target installs
    first on its path."""

    python: Path
    root: Path  # the venv, or the --peer-site folder: its settings file stays there
    site: Path | None = None

    def env(self, threads: int) -> dict[str, str]:
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0",
               "YOLO_CONFIG_DIR": str(self.root / "yolo_config"),
               "OMP_NUM_THREADS": str(threads)}
        if self.site is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.site), os.environ.get("PYTHONPATH", "")) if p)
        return env


PROBE = ("import json, importlib.metadata as m\n"
         "def v(p):\n"
         "    try:\n"
         "        return m.version(p)\n"
         "    except m.PackageNotFoundError:\n"
         "        return None\n"
         "import ultralytics, cv2, onnxruntime\n"
         "print(json.dumps({p: v(p) for p in ('ultralytics', 'onnxslim', 'torch', 'torchvision', "
         "'onnx', 'onnxruntime', 'onnxruntime-gpu', 'opencv-python', "
         "'opencv-python-headless')}))")


def ensure_peer(venv: Path, site: Path | None) -> tuple[Peer, dict[str, str]]:
    """The scratch venv with Ultralytics (made and filled once, reused after), or the
    --peer-site folder as it is; and its versions."""
    if site is not None:
        peer = Peer(Path(sys.executable), site, site)
    else:
        peer = Peer(venv / "bin" / "python", venv)
        if not peer.python.exists():
            print(f"creating the scratch venv {venv} (--system-site-packages)", flush=True)
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                           check=True)
    got = subprocess.run([str(peer.python), "-c", PROBE], capture_output=True, text=True,
                         env=peer.env(1))
    if got.returncode != 0 and site is None:
        print(f"pip-installing {' '.join(PEER_PACKAGES)} into {venv}", flush=True)
        subprocess.run([str(peer.python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES],
                       check=True)
        got = subprocess.run([str(peer.python), "-c", PROBE], capture_output=True, text=True,
                             env=peer.env(1))
    if got.returncode != 0:
        where = f"--peer-site {site}" if site else f"the scratch venv {venv}"
        sys.exit(f"{where} has no working Ultralytics:\n{got.stderr[-2000:]}\n"
                 f"remove it and run again, or give another folder")
    return peer, json.loads(got.stdout.strip().splitlines()[-1])  # Ultralytics may print first


def make_frames(root: Path, n: int, seed: int = 0) -> list[Path]:
    """n 1280x720 JPEGs (shapes on noise) in root/frames/: one class folder, as
    data=imagefolder reads them. Made once per count, reused after."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder = root / "frames"
    paths = [folder / f"frame_{i:03d}.jpg" for i in range(n)]
    if all(p.exists() for p in paths) and len(list(folder.glob("*.jpg"))) == n:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jpg"):
        old.unlink()
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    w, h = FRAME_SIZE
    for p in paths:
        base = rng.integers(40, 200, size=(h // 8, w // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        noise = rng.integers(-20, 21, size=(h, w, 3))
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255)
                              .astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(pick.randint(3, 8)):
            x0, y0 = pick.randint(0, w - 100), pick.randint(0, h - 100)
            box = (x0, y0, x0 + pick.randint(40, 400), y0 + pick.randint(40, 300))
            colour = tuple(pick.randint(0, 255) for _ in range(3))
            (draw.ellipse if pick.random() < 0.5 else draw.rectangle)(box, fill=colour)
        img.save(p, quality=90)
    return paths


def export_files(peer: Peer, work: Path, opset: int, threads: int) -> dict[str, Path]:
    """The batch-1 static file and the dynamic one, exported by Ultralytics in its venv."""
    files = {"b1": work / "yolo11n-b1.onnx", "dynamic": work / "yolo11n-dynamic.onnx"}
    if all(f.exists() for f in files.values()):
        return files
    run = subprocess.run([str(peer.python), str(HERE), "_export",
                          json.dumps({"work": str(work), "opset": opset,
                                      "files": {k: str(v) for k, v in files.items()}})],
                         cwd=work, env=peer.env(threads), capture_output=True, text=True)
    if run.returncode != 0 or not all(f.exists() for f in files.values()):
        sys.exit(f"Ultralytics' ONNX export failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
    return files


def _export(args: dict) -> None:
    """(In the venv.) YOLO11n from its YAML, random weights, exported twice."""
    from ultralytics import YOLO, settings

    settings.update(sync=False)  # no analytics events
    for kind, dest in args["files"].items():
        model = YOLO("yolo11n.yaml")
        got = model.export(format="onnx", imgsz=IMGSZ, opset=args["opset"],
                           batch=1, dynamic=kind == "dynamic")
        Path(got).replace(dest)


def _peer(args: dict) -> None:
    """(In the venv.) Ultralytics' predict over the frames: warm-up, then timed full passes for
    at least args['seconds']; per-image speed as Ultralytics reports it, and the wall clock."""
    threads = args["threads"]
    # torch first: ONNX Runtime's CUDA provider then finds the CUDA libraries torch loaded
    import torch  # isort: skip
    import onnxruntime as ort

    if args["device"] != "cpu" and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # as the tool's ONNX runtime does

    torch.set_num_threads(threads)
    made: list = []
    original = ort.InferenceSession

    def session(path, sess_options=None, providers=None, **kw):
        # Ultralytics' ONNX backend passes no SessionOptions: the same thread count as the tool's
        so = sess_options or ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        made.append(original(path, so, providers=providers, **kw))
        return made[-1]

    ort.InferenceSession = session
    from ultralytics import YOLO, settings

    settings.update(sync=False)
    # a folder, as a user points predict at one: read file by file (cv2) batch by batch; a list
    # of paths would be decoded all at once up front and run as one batch
    folder = args["folder"]
    first = str(sorted(Path(folder).glob("*.jpg"))[0])
    kw = dict(imgsz=IMGSZ, device=args["device"], batch=args["batch"], conf=args["conf"],
              iou=args["iou"], max_det=args["max_det"], rect=False, verbose=False)
    model = YOLO(args["model"], task="detect")
    for _ in range(3):  # warm-up (predict warms the model up once more itself)
        model.predict(first, **kw)
    if args["batch"] > 1:
        model.predict(folder, **kw)
    # select_device sets torch's threads to min(8, cores - 1) when the predictor is made: back to
    # the count both sides use (the predictor is reused by the calls below)
    torch.set_num_threads(threads)
    speeds: list[dict] = []
    boxes: list[int] = []
    passes, t0 = 0, time.perf_counter()
    while passes == 0 or time.perf_counter() - t0 < args["seconds"]:
        for r in model.predict(folder, stream=True, **kw):
            speeds.append(dict(r.speed))
            boxes.append(len(r.boxes))
        passes += 1
    wall = time.perf_counter() - t0
    mean = {k: statistics.fmean(s[k] for s in speeds) for k in speeds[0]}
    median = {k: statistics.median(s[k] for s in speeds) for k in speeds[0]}
    sess = made[-1]
    if args["device"] != "cpu" and sess.get_providers()[0] != "CUDAExecutionProvider":
        # Ultralytics falls back to the CPU with a warning: a comparison with the tool on CUDA
        # would then be meaningless
        sys.exit(f"Ultralytics' session runs on {sess.get_providers()}, not CUDA: the venv needs "
                 "onnxruntime-gpu (pip install onnxruntime-gpu in --venv) and a visible GPU")
    opts = sess.get_session_options()
    out = {"images": len(speeds), "passes": passes, "wall_s": wall,
           "img_per_s": len(speeds) / wall, "speed_ms_mean": mean, "speed_ms_median": median,
           "pre_inf_post_ms": sum(mean.values()), "boxes_per_img": statistics.fmean(boxes),
           "providers": sess.get_providers(), "intra_op_threads": opts.intra_op_num_threads,
           "inter_op_threads": opts.inter_op_num_threads, "torch_threads": torch.get_num_threads(),
           "input_shape": sess.get_inputs()[0].shape}
    Path(args["out"]).write_text(json.dumps(out))


def run_peer(peer: Peer, work: Path, model: Path, folder: Path, a, batch: int, tag: str) -> dict:
    out = work / f"peer-{tag}.json"
    out.unlink(missing_ok=True)
    args = {"model": str(model), "folder": str(folder), "threads": a.threads,
            "device": "cuda:0" if a.gpu else "cpu", "batch": batch, "conf": a.conf,
            "iou": a.iou, "max_det": a.max_det, "seconds": a.seconds, "out": str(out)}
    run = subprocess.run([str(peer.python), str(HERE), "_peer", json.dumps(args)],
                         cwd=work, env=peer.env(a.threads), capture_output=True, text=True)
    if run.returncode != 0 or not out.exists():
        sys.exit(f"Ultralytics' predict failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
    return json.loads(out.read_text())


def tool_command(model: Path, frames_root: Path, a, batch: int, run_dir: Path,
                 pipeline: str) -> list[str]:
    """`python -m sweep` as a user types it, with the thread count and NMS settings explicit."""
    provider, device = ("cuda", "cuda") if a.gpu else ("cpu", "cpu")
    return [sys.executable, "-m", "sweep", "model=onnx", f"model.path={model}",
            "model.output_format=yolo", "data=imagefolder", f"data.root={frames_root}",
            f"data.max_images={a.frames}", "runtime=onnx", f"runtime.provider={provider}",
            f"runtime.intra_op_threads={a.threads}", "runtime.inter_op_threads=1",
            f"device={device}", f"batch={batch}", f"resolution=[{IMGSZ},{IMGSZ}]",
            f"pipeline={pipeline}", "pipeline.resize=letterbox", f"postprocess.conf={a.conf}",
            f"postprocess.iou={a.iou}", f"postprocess.max_det={a.max_det}",
            f"bench.min_seconds={a.seconds}", "tracking.enabled=false",
            f"hydra.run.dir={run_dir}", *a.tool_arg]


def run_tool(work: Path, model: Path, frames_root: Path, a, batch: int, tag: str,
             pipeline: str) -> dict:
    run_dir = work / f"tool-{pipeline}-{tag}"
    shutil.rmtree(run_dir, ignore_errors=True)  # else the tool resumes: a finished job is skipped
    cmd = tool_command(model, frames_root, a, batch, run_dir, pipeline)
    env = {**os.environ, "SWEEP_CACHE_DIR": str(work / "cache"), "OMP_NUM_THREADS": str(a.threads)}
    run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    result_file = run_dir / "result.json"
    if run.returncode != 0 or not result_file.exists():
        sys.exit("the tool refused the configuration or failed (issue 33's detection wiring: "
                 "model.output_format, resolution=[h,w], pipeline.resize, postprocess.*; is it "
                 f"in the sweep on the path? PYTHONPATH={os.environ.get('PYTHONPATH', '')!r}; "
                 "--peer-only measures Ultralytics alone)\n"
                 f"command: {' '.join(cmd)}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
    result = json.loads(result_file.read_text())
    if result.get("status") != "ok":
        sys.exit(f"the tool's job failed: {result.get('error')}\ncommand: {' '.join(cmd)}")
    info = result.get("info", {})
    params = result.get("params", {})
    return {"command": cmd, "metrics": result["metrics"],
            "info": {k: info[k] for k in TOOL_INFO if k in info},
            "params": {k: v for k, v in params.items()
                       if k.startswith(("runtime", "postprocess", "pipeline")) or k in (
                           "batch", "resolution", "device", "precision")}}


def tool_source() -> dict[str, str]:
    """Which sweep the tool runs came from (the PYTHONPATH's or the installed one), and its commit:
    the detection wiring may be a branch's working tree."""
    got = subprocess.run([sys.executable, "-c", "import sweep; print(sweep.__file__)"],
                         capture_output=True, text=True)
    if got.returncode != 0:
        return {"sweep": "not importable"}
    src = Path(got.stdout.strip()).parent
    git = ["git", "-C", str(src)]
    head = subprocess.run([*git, "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True,
                           text=True)
    return {"sweep": str(src), "commit": head.stdout.strip()[:100],
            "uncommitted_files": str(len(dirty.stdout.splitlines()))}


def pair_verdict(tool: dict, peer: dict) -> dict:
    """The bar's two comparisons for one tool run and the peer run beside it."""
    m = tool["metrics"]
    peer_infer = peer["speed_ms_mean"]["inference"]
    ratio = m["infer_ms_per_img"] / peer_infer
    return {"infer_ratio": ratio, "infer_within_5pct": abs(ratio - 1) <= BAR_INFER,
            "stage_infer_ratio": m["infer_ms"] / peer_infer if "infer_ms" in m else None,
            "e2e_ms_tool": m["e2e_ms_per_img"], "pre_inf_post_ms_peer": peer["pre_inf_post_ms"],
            "e2e_not_higher": m["e2e_ms_per_img"] <= peer["pre_inf_post_ms"],
            "e2e_fps_ratio_vs_peer_wall": m["e2e_fps"] / peer["img_per_s"]}


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(rows: list[dict]) -> str:
    head = ("| batch | pair | side | img/s (wall) | infer ms/img | pre ms | infer stage ms | "
            "post ms | decode ms | e2e ms/img (peer: pre+infer+post) | load |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r["side"] != "peer":
            m = r["result"]["metrics"]
            cells = [m.get("e2e_fps"), m.get("infer_ms_per_img"), m.get("preprocess_ms"),
                     m.get("infer_ms"), m.get("postprocess_ms"), m.get("decode_ms"),
                     m.get("e2e_ms_per_img")]
        else:
            s = r["result"]["speed_ms_mean"]
            cells = [r["result"]["img_per_s"], s["inference"], s["preprocess"], s["inference"],
                     s["postprocess"], None, r["result"]["pre_inf_post_ms"]]
        lines.append(f"| {r['batch']} | {r['pair']} | {r['side']} | "
                     + " | ".join(_cell(c) for c in cells) + f" | {r['load']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64, help="1280x720 JPEGs generated")
    ap.add_argument("--pairs", type=int, default=2, help="tool, peer pairs per batch size")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="ONNX Runtime intra-op, OMP and torch threads, both sides")
    ap.add_argument("--seconds", type=float, default=5.0, help="timed span of each run, at least")
    ap.add_argument("--batch", type=int, nargs="+", help="default: 1 on the CPU, 1 32 with --gpu")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.7)
    ap.add_argument("--max-det", type=int, default=300)
    ap.add_argument("--pipelines", nargs="+", default=["serial"],
                    help="the tool's input pipelines, each run in every pair before the peer "
                         "(pipeline=gpu decodes with nvJPEG and letterboxes on the GPU)")
    ap.add_argument("--gpu", action="store_true", help="ONNX Runtime's CUDA provider, both sides")
    ap.add_argument("--peer-only", action="store_true", help="Ultralytics alone (no tool runs)")
    ap.add_argument("--venv", type=Path, default=TMP / "detection_peer_venv")
    ap.add_argument("--peer-site", type=Path,
                    help="instead of a venv: a folder Ultralytics is pip --target installed in "
                         "(a machine that reaches no package index), run by this interpreter")
    ap.add_argument("--work", type=Path, default=TMP / "detection_peer")
    ap.add_argument("--tool-arg", action="append", default=[], help="an extra sweep override")
    ap.add_argument("--out", type=Path, help="folder for detection_peer.json and table.md")
    a = ap.parse_args()
    batches = a.batch or ([1, 32] if a.gpu else [1])

    a.work.mkdir(parents=True, exist_ok=True)
    peer, versions = ensure_peer(a.venv, a.peer_site)
    paths = make_frames(a.work / "frames", a.frames)
    opset = tool_opset()
    files = export_files(peer, a.work, opset, a.threads)
    source = {} if a.peer_only else tool_source()  # before the runs: a branch may move during them
    rows: list[dict] = []
    pairs: list[dict] = []
    for batch in batches:
        model = files["b1"] if batch == 1 else files["dynamic"]
        for p in range(a.pairs):
            got: dict[str, dict] = {}
            sides = [] if a.peer_only else [f"tool ({pipe})" for pipe in a.pipelines]
            for side in (*sides, "peer"):
                tag = f"b{batch}-{p}"
                if side == "peer":
                    got[side] = run_peer(peer, a.work, model, paths[0].parent, a, batch, tag)
                else:
                    got[side] = run_tool(a.work, model, a.work / "frames", a, batch, tag,
                                         side[len("tool ("):-1])
                rows.append({"batch": batch, "pair": p, "side": side, "result": got[side],
                             "load": os.getloadavg()[0]})
                print(table(rows[-1:]).splitlines()[-1], flush=True)
            pairs += [{"batch": batch, "pair": p, "tool": side,
                       **pair_verdict(got[side], got["peer"])} for side in sides]
    summary = {}
    for batch in batches:
        for side in {q["tool"] for q in pairs}:
            mine = [q for q in pairs if q["batch"] == batch and q["tool"] == side]
            summary[f"b{batch} {side}"] = {
                "infer_ratio_median": statistics.median(q["infer_ratio"] for q in mine),
                "infer_within_5pct": [q["infer_within_5pct"] for q in mine],
                "e2e_not_higher": [q["e2e_not_higher"] for q in mine]}
    report = {
        "command": " ".join(["python", "benchmarks/detection_peer.py", *sys.argv[1:]]),
        "tool_side_run": not a.peer_only, "device": "cuda" if a.gpu else "cpu",
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "threads": a.threads, "opset": opset, "imgsz": IMGSZ, "frames": a.frames,
        "frame_size": list(FRAME_SIZE), "nms": {"conf": a.conf, "iou": a.iou,
                                                "max_det": a.max_det},
        "seconds_per_run": a.seconds, "peer_versions": versions,
        "tool_source": source,
        "peer_env": {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "settings.sync": False,
                     "YOLO_CONFIG_DIR": "<venv or --peer-site>/yolo_config"},
        "files": {k: v.name for k, v in files.items()}, "runs": rows, "pairs": pairs,
        "summary": summary,
    }
    text = table(rows)
    print(text)
    print(json.dumps(summary, indent=1))
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "detection_peer.json").write_text(json.dumps(report, indent=1) + "\n")
        (a.out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] in ("_export", "_peer"):
        {"_export": _export, "_peer": _peer}[sys.argv[1]](json.loads(sys.argv[2]))
    else:
        main()
