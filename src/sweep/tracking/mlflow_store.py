"""MLflow: one parent run per multirun, one child run per job. The only module that imports mlflow.

Everything goes through MlflowClient with explicit run ids, never the fluent API's global
"active run" or tracking URI, so jobs that share a process (the basic launcher) cannot log into
each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sweep.config import PipelineConfig, RuntimeConfig, ScenarioConfig, TrackingConfig
from sweep.redact import is_secret_name, redact, without_credentials
from sweep.result import (
    JOB_ARTIFACTS,
    PLOTS_DIR,
    REPORT_FILES,
    SAMPLES_FILE,
    SweepRecord,
    flatten,
    read_samples,
    run_name,
    sweep_name,
    swept_keys,
)
from sweep.sources import NOT_APPLICABLE, Sweep, sweep_from_runs
from sweep.tracking.base import Tracker

log = logging.getLogger(__name__)
# MLflow 3's UI otherwise opens an experiment on its GenAI traces overview, not the runs table
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PAGE = 1000  # runs per search page
# set last on a job's run: everything was logged (a run without it was cut off and is redone)
COMPLETE_TAG = "sweep.logged"
DIGEST_TAG = "sweep.result_digest"
# a run's folder name, as result.json's `job` (its run name puts what the sweep varies first)
JOB_TAG = "sweep.job"
NOTE_TAG = "mlflow.note.content"  # the run's description: its headline figures, rounded
# the figures a user compares runs by, in the order the runs table shows them (each scenario
# logs some: offline fps and ms per batch, serving qps and latency per request)
HEADLINE_RUN = ("fps", "e2e_fps", "server_qps", "max_qps_at_slo", "infer_ms_p50", "infer_ms_p99",
                "latency_ms_p50", "latency_ms_p99", "util_pct", "energy_j_per_img", "correct")
# a runs table view stored on the experiment, opened by `viewStateShareKey` in the link
VIEW_TAG = "mlflow.sharedViewState."
RUN_NAME_COLUMN, DESCRIPTION_COLUMN = "attributes.`Run Name`", "attributes.`Description`"


def param_key(key: str) -> str:
    """An override's key as MLflow accepts it: `+fault_at` -> `fault_at` (Hydra's +/++/~
    prefixes dropped, other characters MLflow refuses replaced by _)."""
    return re.sub(r"[^\w\-. :/]", "_", key.lstrip("+~"))


def option_keys() -> set[str]:
    """Every option of every choice of the groups whose choices differ in their options
    (runtime, pipeline, scenario), as flat param names: `runtime.opset`, `scenario.slo_ms`..."""
    keys: set[str] = set()
    for group, family in (("runtime", RuntimeConfig), ("pipeline", PipelineConfig),
                          ("scenario", ScenarioConfig)):
        for schema in family.choices.values():
            keys.update(flatten(schema(), group))
    return keys


def uniform_params(params: dict[str, Any]) -> dict[str, Any]:
    """The same param names on every child run, so that MLflow's compare view and runs table
    line up across runtimes: an option the job's choice lacks is logged as `n/a`."""
    return {**dict.fromkeys(sorted(option_keys() - set(params)), NOT_APPLICABLE), **params}


def rounded(value: float) -> str:
    """Three significant figures, whole numbers from 100 up: `2.18`, `64.3`, `1066`."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


# how a run's description shows each headline figure: short, as the runs table shows a
# description's first NOTE_SHOWN characters (the whole on hover)
_NOTE_FORMAT = {"fps": "{} fps", "e2e_fps": "{} e2e fps", "server_qps": "{} qps",
                "max_qps_at_slo": "{} qps at SLO", "infer_ms_p50": "p50 {} ms",
                "infer_ms_p99": "p99 {} ms", "latency_ms_p50": "p50 {} ms",
                "latency_ms_p99": "p99 {} ms", "util_pct": "util {}%",
                "energy_j_per_img": "{} J/img"}
NOTE_SHOWN = 50


def headline_note(metrics: dict[str, float]) -> str:
    """A job run's description: its headline figures, rounded, in HEADLINE_RUN's order
    (`188 fps · p50 5.21 ms · p99 6.12 ms · correct`; the ms of an offline job are per batch,
    of a serving one per request); a wrong result says so first."""
    shown = []
    for name in HEADLINE_RUN:
        value = metrics.get(name)
        if value is None or not math.isfinite(float(value)):
            continue
        if name != "correct":
            shown.append(_NOTE_FORMAT[name].format(rounded(float(value))))
        elif value:
            shown.append("correct")
        else:
            shown.insert(0, "WRONG")
    return " · ".join(shown)


def runs_view(overrides: list[str]) -> dict[str, Any]:
    """The runs table as a sweep is compared: the run name, the description (headline figures,
    rounded), the headline metrics (in HEADLINE_RUN's order where the UI applies columnOrder
    before the metric columns arrive, else alphabetical), then the params the sweep varies;
    MLflow's default columns (source, models, dataset) left out."""
    swept = [param_key(k.removesuffix(".name")) for k in swept_keys(overrides)]  # model.name
    columns = [DESCRIPTION_COLUMN, *(f"metrics.`{m}`" for m in HEADLINE_RUN),
               *(f"params.`{k}`" for k in dict.fromkeys(swept))]
    # the UI applies widths only to the columns that columnOrder names
    return {"selectedColumns": columns, "columnOrder": [RUN_NAME_COLUMN, *columns],
            "columnWidths": {RUN_NAME_COLUMN: 220, DESCRIPTION_COLUMN: 360},
            "viewMaximized": False, "runListHidden": False}


@contextlib.contextmanager
def _store_init_lock(uri: str) -> Iterator[None]:
    """An exclusive lock on a local SQLite store's file while MLflow creates and migrates it:
    SQLite's own locks do not cover a schema built by several statements. flock and SQLite's
    fcntl locks are independent, and an empty file is a valid new database."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix + ":memory:":
        yield
        return
    path = Path(uri[len(prefix):].split("?", 1)[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class MlflowTracker(Tracker):
    def __init__(self, cfg: TrackingConfig, uri: str, read_only: bool = False) -> None:
        # MLflow prints "View run ... at: <uri>" per run, credentials included; the tool prints
        # one link of its own, masked
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.experiment = cfg.experiment
        self.view_key: str | None = None  # the runs table view of the sweep opened here
        if read_only:  # a reader makes nothing: no empty database, no empty experiment
            if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
                raise LookupError(f"no MLflow store at {redact(uri)} (no such file); give "
                                  "--tracking-uri, or run a sweep first")
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(cfg.experiment)
            if exp is None:
                raise LookupError(f"the MLflow store at {redact(uri)} has no experiment "
                                  f"{cfg.experiment!r}")
            self.experiment_id = exp.experiment_id
            return
        with _store_init_lock(uri):  # two sweeps must not migrate one new database at once
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = self._experiment(cfg.experiment)

    def ui_path(self) -> str:
        # MLflow 3's UI opens the GenAI overview for a browser that never chose "Model
        # training"; the workflowType parameter chooses it (the UI remembers the choice)
        path = f"#/experiments/{self.experiment_id}/runs?workflowType=machine_learning"
        return f"{path}&viewStateShareKey={self.view_key}" if self.view_key else path

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name, tags=EXPERIMENT_KIND)
        except Exception:  # created meanwhile by a parallel job
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    # --- the sweep's parent run -----------------------------------------------------------

    def open_sweep(self, sweep_dir: Path, info: dict[str, Any]) -> str:
        before = info.get("parent_run_id")
        recorded = info.get("tracking_uri")
        self.view_key = self._share_view(info.get("overrides") or [])
        # the same store whatever credentials reach it (a token given only this time)
        same = recorded and without_credentials(recorded) == without_credentials(self.uri)
        if before and same and self._reopen(before):
            return before
        if before:
            log.warning("the MLflow store at %s does not hold this sweep's parent run %s "
                        "(deleted or emptied, or another store): a new parent run is made and "
                        "the finished jobs are logged to it again", redact(self.uri), before)
        params = {k: redact(v) for k, _, v in
                  (o.partition("=") for o in info.get("overrides", []) if "=" in o)}
        tags = {"sweep.dir": str(Path(sweep_dir).resolve()), "sweep.role": "parent"}
        if info.get("total_jobs"):
            tags["sweep.total_jobs"] = str(info["total_jobs"])
        name = sweep_name(sweep_dir, info.get("overrides"))  # what it varies, then its folder
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    def _share_view(self, overrides: list[str]) -> str:
        """Store the sweep's runs table view (`runs_view`) on the experiment, as MLflow's Share
        button does; returns its key. The same view has the same key, stored once."""
        import hashlib
        import json

        state = json.dumps(runs_view(overrides), sort_keys=True)
        key = "sweep-" + hashlib.sha256(state.encode()).hexdigest()[:12]
        self.client.set_experiment_tag(self.experiment_id, VIEW_TAG + key, state)
        return key

    def _reopen(self, run_id: str) -> bool:
        """Reopen the parent run of a resumed sweep; False when it is not in this store."""
        try:
            self.client.update_run(run_id, status="RUNNING")
            return True
        except Exception:
            return False

    def finish_sweep(self, parent_id: str, metrics: dict[str, float], failed: bool) -> None:
        self._log_metrics(parent_id, metrics)
        self.client.set_terminated(parent_id, "FAILED" if failed else "FINISHED")

    def kill_sweep(self, parent_id: str) -> None:
        self.client.set_terminated(parent_id, "KILLED")

    def log_report(self, parent_id: str, out_dir: Path) -> None:
        """Also tags the parent run with the recommendation of summary.json."""
        import json

        out_dir = Path(out_dir)
        for name in REPORT_FILES:
            if (out_dir / name).exists():
                self.client.log_artifact(parent_id, str(out_dir / name))
        if (out_dir / PLOTS_DIR).is_dir():
            self.client.log_artifacts(parent_id, str(out_dir / PLOTS_DIR), artifact_path=PLOTS_DIR)
        try:
            summary = json.loads((out_dir / REPORT_FILES[1]).read_text())
            self.client.set_tag(parent_id, "sweep.recommendation",
                                str(summary["recommendation"])[:5000])
        except (OSError, ValueError, KeyError):
            pass

    # --- jobs -----------------------------------------------------------------------------

    def _find_job(self, uid: str) -> str | None:
        """The run of job `uid` when it was logged whole (its last step tags it complete)."""
        runs = self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.`sweep.job_uid` = '{uid}'")
        whole = [r for r in runs if r.data.tags.get(COMPLETE_TAG) == "true"]
        return whole[0].info.run_id if whole else None

    def has_job(self, uid: str) -> bool:
        return self._find_job(uid) is not None

    def _runs_of(self, uid: str, job_dir: Path) -> list:
        """Every live run of this job: of its uid, or of its folder (an earlier measurement)."""
        folder = str(job_dir.resolve()).replace("\\", "\\\\").replace("'", "\\'")
        found = {}
        for where in (f"tags.`sweep.job_uid` = '{uid}'", f"tags.`sweep.job_dir` = '{folder}'"):
            for run in self._search(where):
                found[run.info.run_id] = run
        return list(found.values())

    def log_job(self, result: dict[str, Any], job_dir: Path, parent_id: str | None) -> str:
        """Params, metrics, environment tags and artifacts. The job's folder has one run: the
        same result logged whole before keeps its run (nothing is logged twice); a run of an
        earlier measurement of that folder (force, retry_failed, new rounds) or one logged only
        in part (a full artifact store) is deleted, so MLflow and the folder agree."""
        digest = _result_digest(result)
        for run in self._runs_of(result["uid"], job_dir):
            tags = run.data.tags
            if (tags.get("sweep.job_uid") == result["uid"] and tags.get(COMPLETE_TAG) == "true"
                    and tags.get(DIGEST_TAG) in (digest, None)):
                return run.info.run_id
            self.client.delete_run(run.info.run_id)
        tags = {f"env.{k}": v for k, v in result["env"].items()}
        tags.update({f"info.{k}": str(v)[:5000] for k, v in result["info"].items()})
        tags.update({"sweep.role": "job", "sweep.status": result["status"],
                     "sweep.job_uid": result["uid"], JOB_TAG: result["job"],
                     "sweep.job_dir": str(job_dir.resolve())})
        if result["error"]:
            tags["sweep.error"] = result["error"][:5000]
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        if note := headline_note(result["metrics"]):
            tags[NOTE_TAG] = note
        overrides = SweepRecord.read(job_dir.parent).overrides
        name = run_name(result["params"], swept_keys(overrides))
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags,
                                     start_time=int(result["started"] * 1000))
        run_id = run.info.run_id
        end = int((result["started"] + result["duration_s"]) * 1000)
        try:
            self._log_params(run_id, uniform_params(result["params"]))
            self._log_metrics(run_id, result["metrics"])
            for name in JOB_ARTIFACTS:
                if (job_dir / name).exists():
                    self.client.log_artifact(run_id, str(job_dir / name))
            hydra_dir = job_dir / ".hydra"
            if hydra_dir.is_dir():
                self.client.log_artifacts(run_id, str(hydra_dir), artifact_path="hydra")
        except BaseException:  # closed as what it is: logged in part (a later upload redoes it)
            with contextlib.suppress(Exception):
                self.client.set_terminated(run_id, "FAILED", end_time=end)
            raise
        self.client.set_tag(run_id, DIGEST_TAG, digest)
        self.client.set_tag(run_id, COMPLETE_TAG, "true")
        self.client.set_terminated(run_id, "FINISHED" if result["status"] == "ok" else "FAILED",
                                   end_time=end)
        return run_id

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(param_key(k), str(v)[:6000]) for k, v in params.items()
                 if not is_secret_name(k)]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def _log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500])

    # --- reading a sweep back -------------------------------------------------------------

    def _search(self, filter_string: str, **kwargs: Any) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=filter_string,
                                           max_results=PAGE, page_token=token, **kwargs)
            runs.extend(page)
            token = page.token
            if not token or kwargs.get("order_by"):
                return runs

    def latest_parent_id(self) -> str:
        """The run id of the experiment's most recent sweep (parent run)."""
        runs = self.client.search_runs([self.experiment_id],
                                       filter_string="tags.`sweep.role` = 'parent'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            raise LookupError(f"experiment {self.experiment!r} at {self.uri} holds no sweep "
                              "(no run tagged sweep.role=parent); run one with "
                              "python -m sweep -m ...")
        return runs[0].info.run_id

    def load_sweep(self, parent_id: str | None = None, with_samples: bool = True) -> Sweep:
        parent_id = parent_id or self.latest_parent_id()
        parent = self.client.get_run(parent_id)
        runs = self._search(f"tags.`mlflow.parentRunId` = '{parent_id}'")
        records = [_record(r) for r in runs]
        samples = {}
        if with_samples:
            for r in runs:
                if r.data.tags.get("sweep.status") == "ok":
                    s = self._samples(r.info.run_id)
                    if s is not None:
                        samples[r.info.run_id] = s
        sweep = sweep_from_runs(records, parent.info.run_name or parent_id, samples, self.uri)
        sweep.parent_run_id = parent_id
        return sweep

    def _samples(self, run_id: str) -> list[float] | None:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client.download_artifacts(run_id, SAMPLES_FILE, tmp)
            except Exception:  # no samples (a failed job): nothing to test
                return None
            return read_samples(Path(path))


def _result_digest(result: dict[str, Any]) -> str:
    """What a measurement found (status, error, metrics): a re-measured job differs."""
    import hashlib
    import json

    blob = json.dumps([result["status"], result["error"], result["metrics"]], sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _record(run: Any) -> dict[str, Any]:
    """A run in the flat shape of mlflow.search_runs' DataFrame records."""
    out: dict[str, Any] = {"run_id": run.info.run_id,  # the job's name, as in its folder
                           "tags.mlflow.runName": run.data.tags.get(JOB_TAG, run.info.run_name)}
    out.update({f"params.{k}": v for k, v in run.data.params.items()})
    out.update({f"tags.{k}": v for k, v in run.data.tags.items() if k != "mlflow.runName"})
    out.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
    return out
