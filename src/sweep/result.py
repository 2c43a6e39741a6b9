"""Every file a sweep keeps on disk, and the names it gives: a job's result record, its samples,
config and error, the sweep file, the report's file names, how jobs and sweeps are named, and
the digest that lets a resumed sweep recognise its finished jobs. No torch here, so reports and
the parent of an isolated job stay light.

A sweep folder (`multirun/<date>/<time>/`) holds `sweep.json` (the `SweepRecord`, written when
the multirun starts: its overrides, job count, MLflow parent run), `.sweep.lock` (held by the
multirun running there), one folder per job, and the report files. A job folder holds
`result.json` (written last, atomically: its presence means the job finished), `samples.json`,
`config.yaml`, and `error.txt` / `worker.log` when they apply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sweep.config import CONTROL_KEYS, PIPELINE_SCHEMAS
from sweep.redact import MASK, is_secret_name, redact, redact_tree

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
SAMPLES_FILE = "samples.json"
ROUNDS_FILE = "rounds.json"  # bench.rounds > 1: one record per round (sweep.rounds)
CONFIG_FILE = "config.yaml"
ERROR_FILE = "error.txt"
WORKER_LOG = "worker.log"  # isolation=process: the worker's stdout and stderr
WORKER_PID = "worker.pid"
JOB_ARTIFACTS = (RESULT_FILE, SAMPLES_FILE, ROUNDS_FILE, CONFIG_FILE, ERROR_FILE, "job.log")
SWEEP_FILE = "sweep.json"
SWEEP_LOCK = ".sweep.lock"  # held by the multirun that runs in the folder (one at a time)
REPORT_FILES = ("summary.csv", "summary.json", "report.md")
PLOTS_DIR = "plots"


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
        """The record as written and logged: secrets masked (sweep.redact)."""
        return redact_tree(asdict(self))


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
            out[name] = MASK if is_secret_name(name) else redact_tree(value)
    return out


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary name and rename: a killed job never leaves a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str))
    except OSError:
        _discard(tmp)
        raise
    os.replace(tmp, path)


def _discard(path: Path) -> None:
    """Remove what a failed write left (on a full disk, a partial file that frees space)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


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


class CorruptResultError(ValueError):
    """A result.json that is there but is not a readable result; the message names the file."""


def read_result(job_dir: Path) -> dict[str, Any]:
    """The job folder's result.json; CorruptResultError (naming the file) when it cannot be
    read as a finished result, OSError when it cannot be opened."""
    path = Path(job_dir) / RESULT_FILE
    text = path.read_text(errors="replace")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise CorruptResultError(f"{path} is not a readable result ({type(e).__name__}: {e}); "
                                 "delete it and re-run the sweep to measure that job again") from e
    if not isinstance(data, dict) or data.get("status") not in ("ok", "failed") or \
            not isinstance(data.get("job"), str):
        raise CorruptResultError(f"{path} is not a result (no job name, or status is neither ok "
                                 "nor failed); delete it and re-run the sweep to measure that "
                                 "job again")
    return data


def load_result(job_dir: Path) -> dict[str, Any] | None:
    """The job folder's finished result (ok or failed), or None when there is none or it is
    unreadable (an interrupted job leaves at most a .tmp file, never a partial result.json)."""
    try:
        return read_result(job_dir)
    except (OSError, ValueError):
        return None


def write_samples(job_dir: Path, samples: dict[str, Any]) -> None:
    write_json_atomic(job_dir / SAMPLES_FILE, samples)


def read_rounds(job_dir: Path) -> list[dict[str, Any]]:
    """The well-formed round records of a job folder (empty when there are none). A damaged
    file (unreadable, or a record of the wrong shape) is named in a warning with what was wrong,
    and what it held is left out: those rounds are measured again."""
    path = Path(job_dir) / ROUNDS_FILE
    try:
        data = json.loads(path.read_text(errors="replace"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        log.warning("%s is not readable (%s: %s): its rounds are measured again", path,
                    type(e).__name__, e)
        return []
    if not isinstance(data, list):
        log.warning("%s holds a %s, not a list of round records: its rounds are measured again",
                    path, type(data).__name__)
        return []
    kept = []
    for i, record in enumerate(data, start=1):
        if why := _round_record_fault(record):
            log.warning("%s: record %d of %d %s: that round is measured again", path, i,
                        len(data), why)
        else:
            kept.append(record)
    return kept


def _round_record_fault(record: Any) -> str | None:
    """What makes `record` no round record (as sweep.rounds.record writes them), or None."""
    if not isinstance(record, dict):
        return f"is a {type(record).__name__}, not an object"
    number = record.get("round")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        return f"has round={number!r} ({type(number).__name__}), not a whole number from 1"
    if not isinstance(record.get("digest"), str):
        return f"has digest={record.get('digest')!r}, not a string"
    if record.get("status") not in ("ok", "failed"):
        return f"has status={record.get('status')!r}, neither 'ok' nor 'failed'"
    if not isinstance(record.get("metrics"), dict):
        return f"has metrics of type {type(record.get('metrics')).__name__}, not an object"
    for key in ("started", "duration_s"):
        if not isinstance(record.get(key, 0.0), int | float):
            return f"has {key}={record.get(key)!r}, not a number"
    return None


def write_rounds(job_dir: Path, records: list[dict[str, Any]]) -> None:
    write_json_atomic(Path(job_dir) / ROUNDS_FILE, records)


def read_samples(path: Path) -> list[float] | None:
    """The per-call times (ms per batch) of a samples.json, or None when absent or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    samples = data.get("samples_ms") if isinstance(data, dict) else None
    return [float(s) for s in samples] if samples else None


def write_config(job_dir: Path, data: dict[str, Any]) -> None:
    """The job's resolved config as config.yaml (what isolation=process's worker runs)."""
    from omegaconf import OmegaConf

    (job_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(redact_tree(data)))


def try_write_config(job_dir: Path, data: dict[str, Any]) -> str | None:
    """write_config, with a failure (disk full) returned as its reason instead of raised."""
    try:
        write_config(job_dir, data)
        return None
    except OSError as e:
        log.error("could not write %s: %s", job_dir / CONFIG_FILE, e)
        _discard(job_dir / CONFIG_FILE)
        return f"{CONFIG_FILE} not written: {e}"


def read_config(job_dir: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(job_dir / CONFIG_FILE), resolve=True)


def write_error(job_dir: Path, text: str) -> bool:
    """error.txt; called from error handlers, so a folder that cannot take it (disk full) is
    logged, never raised. Returns whether it was written."""
    try:
        (job_dir / ERROR_FILE).write_text(redact(text))
        return True
    except OSError as e:
        log.error("could not write %s: %s", job_dir / ERROR_FILE, e)
        _discard(job_dir / ERROR_FILE)
        return False


def config_digest(data: dict[str, Any]) -> str:
    """Identity of what a job measures: the resolved config without the keys that only say how
    it is run, so a resumed sweep recognises its finished jobs."""
    what = {k: v for k, v in data.items() if k not in CONTROL_KEYS}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- names ----------------------------------------------------------------------------------

_PIPELINE_OPTIONS = (("workers", "w"), ("prefetch", "pf"), ("processes", "p"))
_SCENARIO_OPTIONS = (("scenario.clients", "c"), ("scenario.target_qps", "q"),
                     ("scenario.slo_ms", "slo"), ("scenario.max_queue_delay_ms", "d"))
_FLAGS = (("channels_last", "cl"), ("pin_memory", "pin"), ("gpu_non_blocking", "nb"),
          ("cudnn_benchmark", "cudnn"))


# params the name above always shows when they matter; any other swept param is appended
_NAMED = {"runtime", "runtime.mode", "runtime.cuda_graph", "model", "resolution", "batch",
          "precision", "pipeline",
          *(f"pipeline.{k}" for k, _ in _PIPELINE_OPTIONS), *(k for k, _ in _SCENARIO_OPTIONS),
          *(f"flags.{k}" for k, _ in _FLAGS), "scenario",
          "model.path"}  # a model file is named by its stem (sweep/conf/model/onnx.yaml)


def _side(resolution: Any) -> str:
    """`224`, or `96x160` for [height, width]."""
    if isinstance(resolution, list | tuple):
        return "x".join(str(v) for v in resolution)
    return str(resolution)


def _name_parts(params: dict[str, Any], swept: tuple[str, ...] | list[str] = ()
                ) -> list[tuple[set[str], str]]:
    """The parts of a job's name, each with the config keys it shows (to put swept ones first)."""
    runtime = str(params.get("runtime"))
    if params.get("runtime.mode", "default") not in (None, "default"):  # compile's modes differ
        runtime += f"-{params['runtime.mode']}"
    if params.get("runtime.cuda_graph") is True:  # one captured graph: another runtime's figure
        runtime += "-graph"
    model = str(params.get("model"))
    if params.get("model.kind") == "timm":  # timm's resnet18 is not torchvision's
        model = f"timm-{model}"
    parts = [({"runtime", "runtime.mode", "runtime.cuda_graph"}, runtime),
             ({"model", "model.name", "model.kind", "model.path"}, model),
             ({"resolution"}, _side(params.get("resolution"))),
             ({"batch"}, f"b{params.get('batch')}"), ({"precision"}, str(params.get("precision")))]
    if params.get("data") == "imagefolder":
        parts.append(({"pipeline"}, str(params.get("pipeline"))))
        schema = PIPELINE_SCHEMAS.get(params.get("pipeline"))
        defaults = {f.name: f.default for f in dataclasses.fields(schema)} if schema else {}
        for key, short in _PIPELINE_OPTIONS:
            value = params.get(f"pipeline.{key}")
            if value is not None and key in defaults and value != defaults[key]:
                parts.append(({f"pipeline.{key}"}, f"{short}{value}"))
    parts += [({f"flags.{key}"}, short) for key, short in _FLAGS
              if params.get(f"flags.{key}") is True]
    if params.get("scenario") not in (None, "offline"):
        parts.append(({"scenario"}, str(params["scenario"])))
        parts += [({key}, f"{short}{params[key]:g}" if isinstance(params.get(key), float)
                   else f"{short}{params[key]}") for key, short in _SCENARIO_OPTIONS
                  if params.get(key) not in (None, 0, 0.0)]
    parts += [({key}, f"{key}_{params[key]}") for key in swept
              if key in params and key not in _NAMED]
    return [(keys, re.sub(r"[^\w.,=+-]", "_", part)) for keys, part in parts]  # no / or spaces


def job_name(params: dict[str, Any], swept: tuple[str, ...] | list[str] = ()) -> str:
    """Readable name of a job from its flat params (`flatten`), e.g. ``torch-resnet18-224-b8-fp32``;
    the same rule for a job that finished and one whose config was refused, for its folder and
    its result. `swept`: the params its sweep varies (`swept_keys`); those the name does not
    show already are appended as `<key>_<value>` (`runtime.freezing_True`)."""
    return "-".join(part for _, part in _name_parts(params, swept))


def run_name(params: dict[str, Any], swept: tuple[str, ...] | list[str] = ()) -> str:
    """The job's MLflow run name: job_name's parts that its sweep varies first, as the runs table
    cuts names short (`b8 · openvino-resnet18-224-fp32`); job_name when nothing is swept."""
    parts = _name_parts(params, swept)
    varied = {k.lstrip("+~") for k in swept}
    front = [part for keys, part in parts if keys & varied]
    rest = [part for keys, part in parts if not keys & varied]
    return f"{' '.join(front)} · {'-'.join(rest)}" if front else "-".join(rest)


def job_order(name: str) -> tuple[int, str]:
    """Hydra's job number first (`12_torch-...`), then the name."""
    head = name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, name)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep that hold a result.json, in Hydra's job order."""
    found = [p for p in Path(sweep_dir).iterdir() if (p / RESULT_FILE).is_file()]
    return sorted(found, key=lambda p: job_order(p.name))


_SWEEP_FUNCTIONS = ("range(", "choice(", "interval(", "glob(", "tag(", "shuffle(", "sort(")


def _is_sweep_override(override: str) -> bool:
    value = override.partition("=")[2]
    return "=" in override and ("," in value or value.startswith(_SWEEP_FUNCTIONS))


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys a sweep's overrides vary (`batch=1,8` -> batch; `+x=...` -> x)."""
    return [o.partition("=")[0].lstrip("+~") for o in overrides if _is_sweep_override(o)]


def sweep_label(overrides: list[str]) -> str:
    """What a sweep varies, as a person would type it: the experiment it runs, then its swept
    overrides (`experiment=pin_memory_ab batch=1,8`); `sweep` when it varies nothing."""
    chosen = [o for o in overrides if o.lstrip("+~").startswith("experiment=")]
    swept = [o for o in overrides if o not in chosen and _is_sweep_override(o)]
    label = " ".join(chosen + swept) or "sweep"
    return label if len(label) <= 80 else label[:79] + "…"


def sweep_name(sweep_dir: Path, overrides: list[str] | None = None) -> str:
    """The parent run's and the report's name: what the sweep varies first (the part MLflow's
    runs table shows when it truncates), then its folder, which tells repeats apart:
    `runtime=torch,onnx batch=1,8 (2026-12-01/20-43-13)`. Overrides default to the sweep
    record's."""
    sweep_dir = Path(sweep_dir)
    if overrides is None:
        overrides = SweepRecord.read(sweep_dir).overrides
    return f"{sweep_label(overrides)} ({sweep_dir.parent.name}/{sweep_dir.name})"


def failed_result(params: dict[str, Any], error: str) -> JobResult:
    """The record of a job that could not run, named by the same rule as one that did."""
    return JobResult(job=job_name(params), status="failed", error=error, params=params)


# --- the sweep record ------------------------------------------------------------------------


@dataclass
class SweepRecord:
    """What a multirun records in its folder's sweep file (`SWEEP_FILE`) when it starts
    (sweep.lifecycle), what the rounds sweeper adds and what its jobs, reports and uploads read
    back. The JSON keys are the field names; keys this version does not know are kept as read."""

    started: float = 0.0  # time.time() when the multirun started: this run's progress counts
    overrides: list[str] = field(default_factory=list)  # sweep_overrides: what it varies
    total_jobs: int | None = None  # the grid's size or an optimiser's n_trials; None: unknown
    parent_run_id: str | None = None  # the tracking store's parent run, reopened on resume
    tracking_uri: str | None = None  # the store that holds it (its password masked)
    tracking_offline: str | None = None  # why the store was not reached: jobs do not try it
    rounds: int | None = None  # bench.rounds > 1: the rounds sweeper's plan
    round_plan: list[list[int]] | None = None  # per round, the order of the grid's jobs
    unknown: dict[str, Any] = field(default_factory=dict)  # another version's keys, kept

    # written even when empty, as the multirun's start always wrote them; the rest when set
    ALWAYS = ("started", "overrides", "total_jobs", "parent_run_id")

    @classmethod
    def read(cls, sweep_dir: Path) -> SweepRecord:
        """The record in `sweep_dir` (an empty one when there is no readable file)."""
        try:
            data = json.loads((Path(sweep_dir) / SWEEP_FILE).read_text())
        except (OSError, ValueError):
            return cls()
        if not isinstance(data, dict):
            return cls()
        known = {f.name for f in dataclasses.fields(cls)} - {"unknown"}
        record = cls(**{k: v for k, v in data.items() if k in known})
        record.unknown = {k: v for k, v in data.items() if k not in known}
        if record.overrides is None:  # an old file's null: no overrides
            record.overrides = []
        return record

    def as_dict(self) -> dict[str, Any]:
        """The record as its JSON keys, unmasked (what the tracking store is handed)."""
        out = {k: v for k, v in asdict(self).items() if k != "unknown"
               and (k in self.ALWAYS or v is not None)}
        return {**out, **{k: v for k, v in self.unknown.items() if k not in out}}

    def write(self, sweep_dir: Path) -> None:
        """Write the record atomically, secrets masked (sweep.redact)."""
        write_json_atomic(Path(sweep_dir) / SWEEP_FILE, redact_tree(self.as_dict()))

    @property
    def swept(self) -> tuple[str, ...]:
        """The params the multirun varies (`swept_keys` of its overrides)."""
        return tuple(swept_keys(self.overrides))

    @classmethod
    def note_offline(cls, sweep_dir: Path, reason: str) -> None:
        """Record that the tracking store failed a job (`reason`), so the sweep's later jobs
        skip it rather than each wait for it; a folder that cannot take it is passed over."""
        record = cls.read(sweep_dir)
        record.tracking_offline = reason
        try:
            record.write(sweep_dir)
        except OSError:
            pass
