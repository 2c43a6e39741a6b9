"""Datasheet peaks of the hardware a job runs on, chosen by name or detected (`hardware=auto`)."""

from __future__ import annotations

import logging
from dataclasses import replace

from omegaconf import OmegaConf

from sweep.config import HardwareConfig
from sweep.paths import conf_dir

log = logging.getLogger(__name__)


def known_hardware() -> dict[str, HardwareConfig]:
    """Every entry of sweep/conf/hardware/ except `auto`, by name."""
    entries = {}
    for path in sorted((conf_dir() / "hardware").glob("*.yaml")):
        raw = OmegaConf.to_container(OmegaConf.load(path))
        raw.pop("defaults", None)
        entry = HardwareConfig(**raw)  # what a file leaves out is the schema's default
        if entry.name != "auto":
            entries[entry.name] = entry
    return entries


def resolve_hardware(hw: HardwareConfig, device_name: str, is_cuda: bool) -> HardwareConfig:
    """Return `hw` itself, or for `auto` the entry whose `match` fits `device_name`.

    With no match the result keeps the name `auto` and no peaks, and the reason is in
    `description`, so util_pct stays empty instead of being computed against a wrong peak.
    """
    if hw.name != "auto":
        return hw
    entries = known_hardware()
    if not is_cuda:
        return replace(entries["cpu"], description=f"{entries['cpu'].description}: {device_name}")
    for entry in entries.values():
        if any(m.lower() in device_name.lower() for m in entry.match):
            return entry
    msg = (
        f"hardware=auto has no entry for the device {device_name!r}; util_pct is not reported. "
        f"Known: {', '.join(entries)}. Add {conf_dir() / 'hardware'}/<name>.yaml or "
        "pass hardware=<name>."
    )
    log.warning(msg)
    return HardwareConfig(name="auto", description=msg)


def peak_tflops(hw: HardwareConfig, precision: str) -> float | None:
    """Peak of `precision` (int8 in TOPS); None where the datasheet gives none."""
    return hw.peak_tflops.get(precision)
