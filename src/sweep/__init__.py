"""inference-sweep: Hydra-orchestrated inference benchmarks logged to MLflow."""

__version__ = "0.1.0"
