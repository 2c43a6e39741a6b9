"""The errors a job reports to its user, with the one message format for bad values."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot work; the message says what to type instead."""

    key: str | None = None  # the config key at fault, when one is


class UnsupportedError(RuntimeError):
    """A runtime or pipeline cannot do what the job asks (precision, device, missing library)."""


def config_error(key: str, value: Any, allowed: str, hint: str = "") -> ConfigError:
    """Build the one error format used everywhere: key, value received, what is allowed."""
    msg = f"{key}={value!r} is not valid: {allowed}."
    if hint:
        msg += f" {hint}"
    error = ConfigError(msg)
    error.key = key
    return error
