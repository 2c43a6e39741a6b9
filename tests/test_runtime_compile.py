"""runtime=compile on the CPU: real torch.compile (inductor) of resnet18 at 32x32, fp32."""

from __future__ import annotations

import os

import pytest
import torch

from sweep.cache import ArtifactCache
from sweep.config import CompileRuntimeConfig, ModelConfig, TorchRuntimeConfig
from sweep.models import build_model
from sweep.runtimes import JobContext, UnsupportedError, create_runtime
from sweep.runtimes.torch_eager import TorchRuntime

RES = 32


def _ctx(cache_root, precision: str = "fp32") -> JobContext:
    return JobContext(device=torch.device("cpu"), precision=precision, batch=1, resolution=RES,
                      channels_last=False, cache=ArtifactCache(cache_root))


def _prepare_and_run(cache_root, x: torch.Tensor, cfg: CompileRuntimeConfig | None = None):
    """A fresh runtime on a fresh model: (Prepared, output), the runtime closed afterwards."""
    runtime = create_runtime(cfg or CompileRuntimeConfig(), _ctx(cache_root))
    try:
        prepared = runtime.prepare(build_model(ModelConfig()), x)
        return prepared, runtime.infer(x).clone()
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def two_compiles(tmp_path_factory):
    """Compile twice into one scratch cache; close() resets dynamo in between."""
    root = tmp_path_factory.mktemp("compile-cache")
    x = torch.randn(1, 3, RES, RES, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        eager = build_model(ModelConfig())(x)
    env_before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    first = _prepare_and_run(root, x)
    env_between = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    second = _prepare_and_run(root, x)
    return root, eager, first, second, (env_before, env_between)


@pytest.mark.slow
def test_compiled_outputs_match_eager(two_compiles):
    _, eager, (_, first_out), (_, second_out), _ = two_compiles
    torch.testing.assert_close(first_out, eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(second_out, eager, rtol=1e-4, atol=1e-4)


def test_first_compile_misses_and_fills_the_sweep_cache(two_compiles):
    root, _, (prepared, _), _, _ = two_compiles
    assert prepared.cache == "miss"
    assert prepared.export_s > 0
    assert prepared.info["inductor_cache_dir"] == str(root / "inductor")
    assert any((root / "inductor" / "fxgraph").rglob("*")), "FX graph cache is empty"


def test_second_compile_in_fresh_dynamo_state_hits_fx_graph_cache(two_compiles):
    _, _, (first, _), (second, _), _ = two_compiles
    assert second.cache == "hit", second.info
    assert second.info["fxgraph_cache"].endswith("0 miss")
    assert second.export_s < first.export_s


def test_close_restores_inductor_cache_dir(two_compiles):
    _, _, _, _, (before, between) = two_compiles
    assert before == between


def test_same_precisions_as_eager_torch():
    from sweep.runtimes.inductor import CompileRuntime

    assert CompileRuntime.supported == TorchRuntime.supported


def test_int8_is_refused_before_any_compile(tmp_path):
    with pytest.raises(UnsupportedError, match="runtime=compile cannot run precision=int8"):
        create_runtime(CompileRuntimeConfig(), _ctx(tmp_path, "int8"))


@pytest.mark.slow
def test_freezing_bypasses_fx_graph_cache_and_is_reset_after_the_job(tmp_path):
    import torch._inductor.config as inductor_config

    saved = inductor_config.freezing
    x = torch.randn(1, 3, RES, RES, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        eager = build_model(ModelConfig())(x)
    prepared, out = _prepare_and_run(tmp_path, x, CompileRuntimeConfig(freezing=True))
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)
    assert prepared.cache == "miss"
    assert "bypass" in prepared.info["fxgraph_cache"]
    assert inductor_config.freezing is saved


@pytest.mark.slow
def test_a_damaged_compiled_artifact_in_the_cache_is_rebuilt(tmp_path, cache_dir):
    """Issue 17, item 11: a truncated .so in the inductor cache made every later compile job
    fail with `ImportError: ... file too short`; the cache rebuilds it instead."""
    import json

    from conftest import QUICK, run_cli
    from test_models_files import tiny

    torch.export.save(torch.export.export(tiny(), (torch.zeros(2, 3, 32, 32),)),
                      str(tmp_path / "tiny.pt2"))
    args = ["model=exported", "model.path=tiny.pt2", "runtime=compile", "batch=2", "device=cpu",
            "tracking.enabled=false", *QUICK]
    first = run_cli([*args, "hydra.run.dir=first"], tmp_path, cache_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    libraries = list((cache_dir / "inductor").rglob("*.so"))
    assert libraries
    for lib in libraries:  # what a job killed while writing leaves behind
        lib.write_bytes(lib.read_bytes()[:100])
    again = run_cli([*args, "hydra.run.dir=again"], tmp_path, cache_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    info = json.loads((tmp_path / "again" / "result.json").read_text())["info"]
    assert "discarded and rebuilt" in info["cache_rebuilt"] and info["cache"] == "miss"
    assert all(lib.stat().st_size > 100 for lib in (cache_dir / "inductor").rglob("*.so"))


@pytest.mark.slow
def test_cuda_graph_is_ignored_on_the_cpu_and_says_so(two_compiles):
    root = two_compiles[0]  # the compile's cache: what is checked here is not the compile
    x = torch.randn(1, 3, RES, RES, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        eager = build_model(ModelConfig())(x)
    for cfg in (TorchRuntimeConfig(cuda_graph=True), CompileRuntimeConfig(cuda_graph=True)):
        prepared, out = _prepare_and_run(root, x, cfg)
        assert prepared.info["cuda_graph"] == "ignored on the CPU"
        torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("cfg", [TorchRuntimeConfig(cuda_graph=True),
                                 CompileRuntimeConfig(cuda_graph=True)])
def test_a_captured_graph_replays_each_new_input_and_refuses_another_shape(tmp_path, cfg):
    ctx = JobContext(device=torch.device("cuda"), precision="fp32", batch=2, resolution=RES,
                     channels_last=False, cache=ArtifactCache(tmp_path))
    model = build_model(ModelConfig())
    xs = torch.randn(3, 2, 3, RES, RES, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        eager = [model(x) for x in xs]
    runtime = create_runtime(cfg, ctx)
    try:
        prepared = runtime.prepare(model, xs[0])
        assert prepared.info["cuda_graph"].startswith("one graph for input (2, 3, 32, 32)")
        for x, ref in zip(xs, eager, strict=True):  # each call sees its own input
            out = runtime.infer(x.cuda()).cpu()
            torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
        with pytest.raises(ValueError, match="prepared for input"):
            runtime.infer(torch.zeros(1, 3, RES, RES, device="cuda"))
    finally:
        runtime.close()
