"""pipeline=dali on DALI's CPU backend (real DALI, real files), its agreement with
pipeline=serial, the decode and inference ceilings and what bounds each end-to-end job, and
nvImageCodec's decoder for pipeline=gpu, run here with its CPU-only backend (its GPU backends
need a GPU: not run here)."""

from __future__ import annotations

import itertools
import json
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    QUICK,
    SET_BATCH,
    SET_RES,
    fitted_runtime,
    image_files,
    only_sweep_dir,
    run_cli,
)
from PIL import Image

from sweep.config import (
    BenchConfig,
    CheckConfig,
    DataConfig,
    ModelConfig,
    SweepConfig,
    TorchRuntimeConfig,
    TrackingConfig,
    pipeline_config,
)
from sweep.errors import ConfigError
from sweep.models import build_model
from sweep.pipelines import create_pipeline
from sweep.pipelines.base import Pipeline, PipelineContext
from sweep.pipelines.serial import SerialPipeline
from sweep.runtimes import JobContext, UnsupportedError, create_runtime
from sweep.scenarios.end_to_end import (
    BOUND_PCT,
    STAGES,
    bound_by,
    host_note,
    measure_ceilings,
    measure_end_to_end,
)

pytest.importorskip("nvidia.dali", reason="pipeline=dali needs nvidia-dali-cuda130 ('.[dali]')")

RES, BATCH = SET_RES, SET_BATCH


@pytest.fixture(scope="module")
def runtime(trained):
    """Eager PyTorch prepared with the fitted model (shared by the tests)."""
    with fitted_runtime(trained[1], torch.device("cpu")) as rt:
        yield rt


def context(dtype=torch.float32, memory_format=torch.contiguous_format) -> PipelineContext:
    return PipelineContext(device=torch.device("cpu"), batch=BATCH, resolution=RES, dtype=dtype,
                           memory_format=memory_format)


def job_config(root: Path, pipeline: str, weights: Path, **values) -> SweepConfig:
    return SweepConfig(
        runtime=TorchRuntimeConfig(), data=DataConfig(name="imagefolder", root=str(root)),
        pipeline=pipeline_config(pipeline, **values), resolution=RES, batch=BATCH,
        model=ModelConfig(weights=str(weights), num_classes=4),
        bench=BenchConfig(warmup=1, min_iters=3, min_seconds=0.05),
        check=CheckConfig(samples=4), tracking=TrackingConfig(enabled=False))


def levels(x: torch.Tensor) -> torch.Tensor:
    """A normalised batch back to its 0..255 levels (float)."""
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    return (x.float() * std + mean) * 255


# --- pipeline=dali on the CPU backend -----------------------------------------------------------

@pytest.mark.parametrize("dtype,memory_format", [
    (torch.float32, torch.contiguous_format), (torch.float16, torch.channels_last),
    (torch.bfloat16, torch.contiguous_format)])
def test_dali_batches_are_serials_preprocessing_in_the_runtimes_dtype_and_layout(
        trained, dtype, memory_format):
    """The same resize contract as pipeline=serial (antialiased bilinear to a square, uint8):
    the decoded pixels are the same (libjpeg-turbo in both), but DALI's resampling is not PIL's
    code, and the levels differ by a few here and there, most of all in the images' first
    column; on average by well under one level."""
    paths = image_files(trained[0])
    ctx = context(dtype, memory_format)
    with closing(create_pipeline(pipeline_config("dali"), ctx)) as dali, \
            closing(SerialPipeline(pipeline_config(), context())) as current:
        staged = dali.to_device(dali.preprocess(dali.decode(paths[:BATCH])))
        ref = current.to_device(current.preprocess(current.decode(paths[:BATCH])))
        fused = list(dali.batches([paths[i:i + BATCH] for i in range(0, len(paths), BATCH)]))
        decoded = np.asarray(dali.decode(paths[:1])[0])
    assert np.array_equal(decoded, np.asarray(Image.open(paths[0]).convert("RGB")))
    assert staged.shape == (BATCH, 3, RES, RES) and staged.dtype == dtype
    assert staged.is_contiguous(memory_format=memory_format)
    assert len(fused) == len(paths) // BATCH
    assert torch.equal(fused[0], staged)  # the fused graph and the split stages: one result
    diff = (levels(staged) - levels(ref)).abs()
    own_rounding = 0.5 if dtype == torch.bfloat16 else 0.0  # bf16's step near 2 is ~0.9 level
    assert diff.max() <= 8, diff.max()
    assert diff.mean() < 0.5 + own_rounding, diff.mean()


def test_dali_stream_left_early_leaves_no_batch_behind(trained):
    """A stream closed while DALI has batches prefetched: the next stream starts with its own
    first files, not with the batches the last one left."""
    paths = image_files(trained[0])
    a, b = paths[:BATCH], paths[BATCH:2 * BATCH]
    with closing(create_pipeline(pipeline_config("dali", prefetch=3), context())) as dali:
        only_b = dali.to_device(dali.preprocess(dali.decode(b)))
        with closing(dali.batches([a] * 10)) as xs:
            next(xs)
        with closing(dali.batches([b])) as xs:
            assert torch.equal(next(xs), only_b)
        assert len(list(dali.decoded([a, b, a]))) == 3


def test_dalis_file_reader_streams_the_batches_its_external_source_would(trained):
    """The timed runs read through DALI's file reader (`stream`): the same batches, in the same
    order, as the external-source graph given the base class's chunks, across the wrap-around
    where a batch takes the last files and the first (a count that no batch size divides)."""
    paths = image_files(trained[0])[:BATCH + 1]
    with closing(create_pipeline(pipeline_config("dali"), context())) as dali:
        fed = []  # the streams of the external-source graphs
        for graph in (dali.fused, dali.decoder):
            graph.stream = lambda items, s=graph.stream: fed.append(1) or s(items)
        for decoded in (False, True):
            with closing(dali.stream(paths, BATCH, decoded)) as xs:
                read = list(itertools.islice(xs, 3))
            assert not fed  # the reader's graph: no external source called
            with closing(Pipeline.stream(dali, paths, BATCH, decoded)) as ys:
                pairs = list(zip(read, itertools.islice(ys, 3), strict=True))
            assert fed
            fed.clear()
            for x, y in pairs:
                if decoded:
                    x = [np.asarray(x[i]) for i in range(BATCH)]
                    y = [np.asarray(y[i]) for i in range(BATCH)]
                    assert all(np.array_equal(a, b) for a, b in zip(x, y, strict=True))
                else:
                    assert x.shape == (BATCH, 3, RES, RES) and torch.equal(x, y)
            assert len(pairs) == 3


def test_dali_agrees_with_serial_end_to_end_and_says_what_bounds_it(trained, runtime):
    root, weights = trained
    metrics, info = measure_end_to_end(job_config(root, "dali", weights), runtime,
                                       torch.device("cpu"))
    assert metrics["data_images"] == 24 and metrics["unreadable_files"] == 0
    assert metrics["pipeline_agreement_pct"] >= 99
    assert metrics["accuracy_top1_pct"] >= 90  # a fitted classifier, not chance (25%)
    for key in ("e2e_fps", "decode_ceiling_fps", "infer_ceiling_fps", *(f"{s}_ms" for s in
                                                                        STAGES)):
        assert metrics[key] > 0, key
    assert "pipeline=dali" in info["pipeline_agreement_basis"]
    assert info["stage_split"].startswith("dali: decode_ms")
    expected, pct = bound_by(metrics["e2e_fps"], metrics["decode_ceiling_fps"],
                             metrics["infer_ceiling_fps"])
    assert info["bound_by"] == expected and metrics["e2e_vs_ceiling_pct"] == pytest.approx(pct)


def test_dali_reads_grayscale_cmyk_and_png_as_serial_does(tmp_path, runtime):
    """The files pipeline=gpu routes to the CPU: DALI decodes them to RGB too."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    (tmp_path / "a").mkdir()
    rgb.convert("L").save(tmp_path / "a" / "gray.jpg", quality=95)
    rgb.save(tmp_path / "a" / "plain.png")
    rgb.convert("CMYK").save(tmp_path / "a" / "cmyk.jpg", quality=95)
    rgb.save(tmp_path / "a" / "plain.jpg", quality=95)
    paths = image_files(tmp_path)
    with closing(create_pipeline(pipeline_config("dali"), context())) as dali, \
            closing(SerialPipeline(pipeline_config(), context())) as current:
        got = levels(dali.preprocess(dali.decode(paths)))
        ref = levels(current.preprocess(current.decode(paths)))
    for i, path in enumerate(paths):
        if path.name != "cmyk.jpg":  # CMYK conversions differ between decoders; say only RGB
            assert (got[i] - ref[i]).abs().mean() < 2, path.name
    assert got.shape == (4, 3, RES, RES)


def test_dali_config_errors_name_the_key_and_what_to_type():
    with pytest.raises(ConfigError) as e:
        pipeline_config("dali", processes=2)
    assert "pipeline.processes" in str(e.value) and "pipeline.processes=0" in str(e.value)
    with pytest.raises(ConfigError) as e:
        pipeline_config("dali", hw_decoder_load=1.5)
    assert "pipeline.hw_decoder_load" in str(e.value) and "between 0 and 1" in str(e.value)


def test_dali_not_installed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # as when the package is absent
    with pytest.raises(UnsupportedError) as e:
        create_pipeline(pipeline_config("dali"), context())
    assert "pip install nvidia-dali-cuda130" in str(e.value) and ".[dali]" in str(e.value)


# --- which stage bounds -----------------------------------------------------------------------

def test_bound_by_names_the_lower_ceiling_when_reached_else_the_host():
    assert bound_by(950.0, 1000.0, 5000.0) == ("decode", pytest.approx(95.0))
    assert bound_by(950.0, 5000.0, 1000.0) == ("inference", pytest.approx(95.0))
    assert bound_by(BOUND_PCT * 10.0, 1000.0, 2000.0)[0] == "decode"  # at the threshold
    assert bound_by(500.0, 1000.0, 2000.0) == ("host", pytest.approx(50.0))
    assert bound_by(1100.0, 1000.0, 2000.0) == ("decode", pytest.approx(110.0))  # overlap


@pytest.mark.slow
def test_cli_sweep_of_dali_and_serial_reports_the_bound(trained, tmp_path, cache_dir):
    root, weights = trained
    proc = run_cli(["-m", "pipeline=serial,dali", "data=imagefolder", f"data.root={root}",
                    f"model.weights={weights}", "model.num_classes=4", "batch=4",
                    "tracking.enabled=false", *QUICK], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only_sweep_dir(tmp_path)
    for result in sweep.glob("*/result.json"):  # every end-to-end job, whatever its pipeline
        r = json.loads(result.read_text())
        m = r["metrics"]
        assert m["decode_ceiling_fps"] > 0 and m["infer_ceiling_fps"] > 0, result
        lower = min(m["decode_ceiling_fps"], m["infer_ceiling_fps"])
        assert m["e2e_vs_ceiling_pct"] == pytest.approx(100 * m["e2e_fps"] / lower)
        assert r["info"]["bound_by"] in ("decode", "inference", "host")
        assert m["pipeline_agreement_pct"] >= 99
    report = (sweep / "report.md").read_text()
    table = report.split("## End to end")[1].split("\n\n")[1]
    header = table.splitlines()[0]
    assert "bound by" in header and "E2E % of ceiling" in header, header
    rows = [line for line in table.splitlines()[2:] if "| dali |" in line]
    assert len(rows) == 1
    assert any(f"| {b} |" in rows[0] for b in ("decode", "inference", "host")), rows[0]
    # a host-bound job's finding (what the pipeline ceiling showed) is said under the table
    for result in sweep.glob("*/result.json"):
        info = json.loads(result.read_text())["info"]
        assert ("bound_finding" in info) == (info["bound_by"] == "host"), info
        if "bound_finding" in info:
            assert info["bound_finding"] in report, (info, report)


# --- nvImageCodec's decoder for pipeline=gpu ------------------------------------------------------

def test_gpu_pipeline_decoder_options_are_checked():
    cfg = pipeline_config("gpu", decoder="nvimgcodec", backend="hybrid")
    assert (cfg.decoder, cfg.backend) == ("nvimgcodec", "hybrid")
    with pytest.raises(ConfigError) as e:
        pipeline_config("gpu", decoder="nvjpeg")
    assert "pipeline.decoder" in str(e.value) and "torchvision, nvimgcodec" in str(e.value)
    with pytest.raises(ConfigError) as e:
        pipeline_config("gpu", decoder="nvimgcodec", backend="cuda")
    assert "pipeline.backend" in str(e.value) and "hw, gpu, hybrid" in str(e.value)


def test_nvimgcodec_decodes_a_batch_to_planar_rgb_and_marks_what_it_cannot(tmp_path):
    """The decoder pipeline=gpu uses with decoder=nvimgcodec, on nvImageCodec's CPU-only backend
    (the hw, gpu and hybrid backends need a GPU: not run here): planar RGB uint8 as PIL decodes
    it, and None, not an exception, for a file it cannot decode (the pipeline decodes that one
    on the CPU and counts it)."""
    pytest.importorskip("nvidia.nvimgcodec", reason="needs nvidia-nvimgcodec-cu13 ('.[gpu]')")
    from torchvision.io import read_file

    from sweep.pipelines.gpu import NvImageCodecDecoder

    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 48), (31, 17)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.jpg", quality=90)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a JPEG after all")
    paths = [tmp_path / "0.jpg", tmp_path / "bad.jpg", tmp_path / "1.jpg"]
    decoder = NvImageCodecDecoder("cpu", None)
    images = decoder.decode([read_file(str(p)) for p in paths])
    assert images[1] is None
    for path, img in zip(paths[::2], images[::2], strict=True):
        ref = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert img.dtype == torch.uint8 and img.shape == ref.shape
        assert (img.int() - ref.int()).abs().max() <= 2  # IDCTs may round differently


def test_nvimgcodec_not_installed_says_what_to_install(monkeypatch):
    from sweep.pipelines.gpu import NvImageCodecDecoder

    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)  # as when the package is absent
    with pytest.raises(UnsupportedError) as e:
        NvImageCodecDecoder("hw", 0)
    assert "nvidia-nvimgcodec-cu13" in str(e.value) and ".[gpu]" in str(e.value)


# --- on a GPU (skipped here: not run on this machine) -------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="the mixed decoder needs CUDA")
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_dali_on_the_gpu_agrees_with_serial_and_stays_on_the_device(trained, memory_format):
    root, weights = trained
    device = torch.device("cuda")
    ctx = JobContext(device=device, precision="fp16", batch=BATCH, resolution=RES,
                     channels_last=memory_format == torch.channels_last, cache=None)
    rt = create_runtime(TorchRuntimeConfig(), ctx)
    rt.prepare(build_model(ModelConfig(weights=str(weights), num_classes=4)),
               torch.zeros(BATCH, 3, RES, RES))
    try:
        pctx = PipelineContext(device=device, batch=BATCH, resolution=RES, dtype=rt.input_dtype,
                               memory_format=rt.input_memory_format)
        with closing(create_pipeline(pipeline_config("dali"), pctx)) as dali:
            (x,) = list(dali.batches([image_files(root)[:BATCH]]))
        assert x.device.type == "cuda" and x.dtype == rt.input_dtype
        assert x.is_contiguous(memory_format=rt.input_memory_format)
        cfg = job_config(root, "dali", weights)
        cfg.device = "cuda"
        metrics, info = measure_end_to_end(cfg, rt, device)
    finally:
        rt.close()
    assert metrics["pipeline_agreement_pct"] >= 99
    assert info["bound_by"] in ("decode", "inference", "host")


def test_a_ceiling_is_the_faster_of_its_run_and_the_instrumented_pass(trained, runtime):
    """The instrumented pass's figures bound the ceilings from below: given a stage pass that
    (as if measured on an idle host) found decoding and inference far faster than any run
    here can, the ceilings are those figures."""
    root, _ = trained
    paths = image_files(root)
    with closing(SerialPipeline(pipeline_config(), context())) as pipe:
        metrics, info = measure_ceilings(pipe, runtime, paths, BATCH, 3, 0.01,
                                         torch.device("cpu"), 10.0,
                                         {"decode_ms": 1e-6, "infer_ms": 2e-6})
    assert metrics["decode_ceiling_fps"] == pytest.approx(1e9)
    assert metrics["infer_ceiling_fps"] == pytest.approx(5e8)
    assert metrics["pipeline_ceiling_fps"] == pytest.approx(1e9)  # decode is all of its stages
    assert info["bound_by"] == "host"  # 10 img/s is nowhere near either
    assert "take turns" in info["bound_finding"]  # 10 img/s: slower than one after the other


def test_a_host_bound_run_says_whether_the_pipeline_alone_is_as_slow_or_the_two_take_turns():
    assert "beyond decoding" in host_note(950.0, 1000.0, 5000.0)
    # one after the other: 1 / (1/1000 + 1/3000) = 750 img/s
    assert "take turns" in host_note(750.0, 1000.0, 3000.0)
    assert "take turns" in host_note(820.0, 1000.0, 3000.0)  # within 10% of it
    assert "same cores" in host_note(750.0, 1000.0, 3000.0, "cpu")
    assert "MPS is off" in host_note(750.0, 1000.0, 3000.0, "processes")
    assert "run under CUDA MPS" in host_note(750.0, 1000.0, 3000.0, "processes_mps")
    assert "slow each other down" in host_note(850.0, 1000.0, 3000.0)


def test_mps_is_seen_by_its_daemon_process(tmp_path):
    """The finding for worker processes says whether CUDA MPS ran them: a control daemon (or
    its server) among the processes; its pipe folder outlives it, so it does not count."""
    from sweep.env import cuda_mps

    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    (proc / "1" / "comm").write_text("python3\n")
    (proc / "self").mkdir()
    assert not cuda_mps(proc)
    (proc / "77").mkdir()
    (proc / "77" / "comm").write_text("nvidia-cuda-mps\n")  # comm is cut to 15 characters
    assert cuda_mps(proc)
    assert not cuda_mps(tmp_path / "none")  # no /proc (not Linux): off
