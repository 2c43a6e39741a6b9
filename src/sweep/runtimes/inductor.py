"""torch.compile with the inductor backend, its compiled graphs cached in the sweep's cache.

The model is placed exactly as eager torch places it (this runtime is a `TorchRuntime` with a
compiled forward), so the two measure the same model in the same dtype and memory format.

Compilation is done in `prepare`, by calling the compiled model on the example input, so the
job's `export_s` is the compile time (tracing, inductor, C++/Triton builds, first call) and
its `first_infer_ms` is the first call after that. Inductor's own caches (FX graph cache,
AOTAutograd cache, autotuning results, compiled C++/Triton kernels) are pointed at
``<cache_dir>/inductor``; `Prepared.cache` is ``hit`` when every graph came from the FX graph
cache, ``miss`` otherwise (also when it was bypassed, as with ``freezing``: only kernels are
reused then).

``runtime.freezing`` sets inductor's `freezing` for the job: weights become constants, folded
and (on the CPU) prepacked for oneDNN, which is what inductor advises for CPU inference.

CUDA graphs (``mode=reduce-overhead`` and ``mode=max-autotune`` on a GPU): `infer` marks a new
step before each call, and the tensor it returns lives in the CUDA graph's memory pool, which
the next call overwrites (PyTorch raises if it is read after that). The timing loop discards
outputs, so nothing is copied there; the correctness check copies each output to the host
before the next call. ``runtime.cuda_graph=true`` (with a mode without CUDA graphs) instead
captures the compiled model in one CUDA graph after compiling, replayed directly
(torch_eager.py); the capture is part of `export_s`.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback

import torch
import torch._functorch.config as functorch_config
import torch._inductor.config as inductor_config
from torch import nn
from torch._inductor import list_mode_options

from sweep.runtimes.base import Prepared
from sweep.runtimes.torch_eager import TorchRuntime

# torch._inductor.config / torch._functorch.config switches for the on-disk caches, set when
# they exist in the installed torch (they move between releases).
_INDUCTOR_CACHE_FLAGS = ("fx_graph_cache", "autotune_local_cache",
                         "bundle_triton_into_fx_graph_cache")
_FUNCTORCH_CACHE_FLAGS = ("enable_autograd_cache",)


def _fx_cache_counts() -> tuple[int, int, int]:
    """(hit, miss, bypass) counts of inductor's FX graph cache so far in this process."""
    from torch._dynamo.utils import counters

    c = counters["inductor"]
    return c["fxgraph_cache_hit"], c["fxgraph_cache_miss"], c["fxgraph_cache_bypass"]


def _enable_caches() -> bool:
    """Switch inductor's local caches on; False when the user forced all caches off."""
    if getattr(inductor_config, "force_disable_caches", False):
        return False
    for module, flags in ((inductor_config, _INDUCTOR_CACHE_FLAGS),
                          (functorch_config, _FUNCTORCH_CACHE_FLAGS)):
        for flag in flags:
            if hasattr(module, flag):
                setattr(module, flag, True)
    return True


def _set_cache_dir(path: str | None) -> None:
    """Point TORCHINDUCTOR_CACHE_DIR at `path` (None: unset) and drop inductor's memoised paths."""
    from torch._inductor.utils import clear_caches

    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") == path:
        return
    if path is None:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    clear_caches()


# what loading a damaged compiled artifact raises (a truncated .so, a cut pickle)
_DAMAGE = ("file too short", "cannot read file data", "invalid ELF header", "EOFError",
           "UnpicklingError", "truncated", "not a valid")


def _damaged_cache(error: BaseException, cache_dir) -> bool:
    """Whether `error` is inductor failing to load something from its cache under `cache_dir`
    (not a model the compiler cannot handle: that fails the job as it is)."""
    text = "".join(traceback.format_exception(error))
    return str(cache_dir) in text and any(sign in text for sign in _DAMAGE)


def _discard(cache_dir, error: BaseException) -> str:
    """Move the inductor cache aside (a rename: jobs still reading it keep their files), remove
    it, forget what this process loaded from it; say what was found."""
    from torch._inductor.utils import clear_caches

    aside = cache_dir.with_name(f"{cache_dir.name}.damaged-{os.getpid()}-{time.time_ns()}")
    os.replace(cache_dir, aside)
    shutil.rmtree(aside, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch._dynamo.reset()
    clear_caches()
    line = str(error).strip().splitlines()
    reason = next((ln for ln in line if any(s in ln for s in _DAMAGE)), line[-1] if line else "")
    return f"a damaged entry in the inductor cache was discarded and rebuilt ({reason[:300]})"


class CompileRuntime(TorchRuntime):
    """Eager torch's placement of the model, run through torch.compile(backend="inductor")."""

    name = "compile"

    @property
    def prepare_phase(self) -> str:
        return "compiling"

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Prepared:
        self._place(model)  # device, dtype, memory format: as eager torch
        self._cudagraphs = (self.ctx.device.type == "cuda"
                            and bool(list_mode_options(self.cfg.mode).get("triton.cudagraphs")))
        self._saved_cache_dir = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        cache_dir = self.ctx.cache.root / "inductor"
        cache_dir.mkdir(parents=True, exist_ok=True)
        _set_cache_dir(str(cache_dir))  # before the first compile
        caching = _enable_caches()
        self._saved_freezing = inductor_config.freezing
        inductor_config.freezing = self.cfg.freezing

        x = example.to(self.ctx.device, self.input_dtype).contiguous(
            memory_format=self.input_memory_format)
        before = _fx_cache_counts()
        t0 = time.perf_counter()
        rebuilt = None
        try:
            self._compile(x)
        except Exception as e:  # a damaged cache entry is rebuilt, never trusted
            if not _damaged_cache(e, cache_dir):
                raise
            rebuilt = _discard(cache_dir, e)
            self._compile(x)
        graph_info = self._capture(self._forward, x)  # runtime.cuda_graph: part of preparing
        export_s = time.perf_counter() - t0
        hits, misses, bypasses = (n - b for n, b in zip(_fx_cache_counts(), before, strict=True))

        if not caching:
            status = "none"
        else:
            status = "hit" if hits and not (misses or bypasses) else "miss"
        fx = f"{hits} hit, {misses} miss" + (f", {bypasses} bypass" if bypasses else "")
        info = {"compile_mode": self.cfg.mode, "cudagraphs": str(self._cudagraphs).lower(),
                "fxgraph_cache": fx if caching else "disabled (force_disable_caches)",
                "inductor_cache_dir": str(cache_dir), **graph_info}
        if rebuilt:
            info["cache_rebuilt"] = rebuilt
            status = "miss"
        return Prepared(export_s=export_s, cache=status, info=info)

    def _compile(self, x: torch.Tensor) -> None:
        self.compiled = torch.compile(self.model, backend="inductor", mode=self.cfg.mode,
                                      fullgraph=self.cfg.fullgraph, dynamic=self.cfg.dynamic)
        # CUDA graph trees warm up on the first call and record on the second: both belong to
        # preparing, so the job's first_infer_ms is the first replay.
        for _ in range(2 if self._cudagraphs else 1):
            self.infer(x)
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        return self.compiled(x)

    def close(self) -> None:
        """Forget compiled code, so the next job of this process compiles afresh."""
        super().close()
        self.compiled = None
        self.model = None
        torch._dynamo.reset()
        if hasattr(self, "_saved_cache_dir"):
            inductor_config.freezing = self._saved_freezing
            _set_cache_dir(self._saved_cache_dir)
