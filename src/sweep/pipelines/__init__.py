"""Input pipelines: each lives in its own module, named by its schema in sweep.config (`impl`)
and imported only when a job asks for it."""

from __future__ import annotations

from sweep.config import PipelineConfig
from sweep.pipelines.base import Pipeline, PipelineContext

__all__ = ["Pipeline", "PipelineContext", "create_pipeline"]


RESIZING = ("serial", "current", "fast", "gpu")  # the pipelines that take pipeline.resize


def create_pipeline(cfg: PipelineConfig, ctx: PipelineContext) -> Pipeline:
    """The pipeline for `cfg`; pipeline=gpu raises UnsupportedError without a CUDA device.
    With `pipeline.processes` > 0, its batches come from worker processes running the same
    pipeline."""
    if ctx.resize is not None and cfg.name not in RESIZING:
        from sweep.errors import UnsupportedError

        raise UnsupportedError(
            f"pipeline={cfg.name} resizes to a square only, and this job needs "
            f"pipeline.resize={ctx.resize} (a detector's letterbox, or a [height, width] "
            f"resolution); use pipeline=serial, fast or gpu")
    pipe = cfg.implementation()(cfg, ctx)
    if cfg.processes:
        from sweep.pipelines.process import ProcessPipeline

        return ProcessPipeline(pipe)
    return pipe
