"""A job's result record and how it is written: no torch here, so reports and the parent of an
isolated job stay light."""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
SAMPLES_FILE = "samples.json"


@dataclass
class JobResult:
    """Everything a job reports; written to result.json and logged to MLflow."""

    job: str
    status: str = "running"  # ok | failed
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)  # dedupes MLflow uploads
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # non-numeric facts: cache hit, peak basis
    env: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"runtime": "onnx", "runtime.opset": 18, ...}; a group's `name` is the
    group itself, so the MLflow columns read runtime=onnx, model=resnet18."""
    if hasattr(obj, "__dataclass_fields__"):
        obj = asdict(obj)
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and key not in ("peak_tflops",):
            out.update(flatten(value, name))
        elif key == "name" and prefix:
            out[prefix] = value
        elif key in ("match", "peak_tflops", "source", "description"):
            continue  # hardware datasheet details: in info, not params
        else:
            out[name] = redact(value) if isinstance(value, str) else value
    return out


_CREDENTIALS = re.compile(r"(?<=://)([^:/@\s]+):([^@/\s]+)@")


def redact(text: str) -> str:
    """Hide the password of a URI (postgresql://user:secret@host -> postgresql://user:***@host)."""
    return _CREDENTIALS.sub(lambda m: f"{m.group(1)}:***@", text)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary name and rename: a killed job never leaves a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def save_result(result: JobResult, job_dir: Path) -> bool:
    """Write result.json; when the folder cannot take it (disk full, read-only), say so loudly,
    mark the job failed and keep the record in memory for MLflow. Returns whether it was saved."""
    try:
        write_json_atomic(job_dir / RESULT_FILE, result.to_json())
        return True
    except OSError as e:
        log.error("could not write %s: %s", job_dir / RESULT_FILE, e)
        note = f"result.json not written: {e}"
        if note not in (result.error or ""):
            result.error = "; ".join(filter(None, [result.error, note]))
        result.status = "failed"
        return False


def load_result(job_dir: Path) -> dict[str, Any] | None:
    """The job folder's finished result (ok or failed), or None when there is none or it is
    unreadable (an interrupted job leaves at most a .tmp file, never a partial result.json)."""
    try:
        data = json.loads((job_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("status") in ("ok", "failed") else None
