"""Hydra plugins of inference-sweep (Hydra discovers plugins only in this namespace)."""
