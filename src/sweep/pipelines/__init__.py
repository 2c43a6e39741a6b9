"""Input pipelines by name (`pipeline=current|fast|gpu`), each in its own module, imported only
when a job asks for it; `measure_end_to_end` is what a job calls."""

from __future__ import annotations

import importlib

from sweep.config import PipelineConfig
from sweep.pipelines.base import Pipeline, PipelineContext
from sweep.pipelines.e2e import measure_end_to_end

PIPELINES = {
    "current": "sweep.pipelines.current:CurrentPipeline",
    "fast": "sweep.pipelines.fast:FastPipeline",
    "gpu": "sweep.pipelines.gpu:GpuPipeline",
}

__all__ = ["PIPELINES", "Pipeline", "PipelineContext", "create_pipeline", "measure_end_to_end"]


def create_pipeline(cfg: PipelineConfig, ctx: PipelineContext) -> Pipeline:
    """The pipeline for `cfg`; pipeline=gpu raises UnsupportedError without a CUDA device.
    With `pipeline.processes` > 0, its batches come from worker processes running the same
    pipeline."""
    module, cls = PIPELINES[cfg.name].split(":")
    pipe = getattr(importlib.import_module(module), cls)(cfg, ctx)
    if cfg.processes:
        from sweep.pipelines.process import ProcessPipeline

        return ProcessPipeline(pipe)
    return pipe
