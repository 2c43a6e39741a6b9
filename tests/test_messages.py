"""What a user reads: a job's progress line says what it measured (serving figures, OVERLOADED,
SLO NOT MET, a round's own figure), a lone job says where its result went, misspellings get a
"did you mean", pairs that cannot run are refused before any job, the spinner is neither doubled
nor broken by warnings, and stability advice fits the device."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import QUICK, only_sweep_dir, run_cli

from sweep import rounds
from sweep.config import MlflowTrackingConfig, from_container
from sweep.lifecycle.one_job import progress_line, where_it_went
from sweep.paths import conf_dir
from sweep.refusals import pair_refusal
from sweep.result import JobResult, SweepRecord
from sweep.scenarios.inference import stability_notes

SERVED = {"server_qps": 812.4, "latency_ms_p50": 3.21, "latency_ms_p99": 9.87,
          "infer_ms_per_img": 0.5, "fps": 2000.0}
SLO = "p99 <= 15 ms (its upper 95% bound)"


def line(metrics, info, status="ok", sweep_dir=None, job_dir=None) -> str:
    result = JobResult(job="onnx-resnet18-224-b8-server", status=status, metrics=metrics,
                       info=info, error=None if status == "ok" else "RuntimeError: boom")
    return progress_line(result, sweep_dir, job_dir=job_dir)


# --- 1: a serving job's line reads as serving ---------------------------------------------------


def test_a_serving_line_shows_served_qps_and_latency_not_offline_ms():
    text = line(SERVED, {})
    assert "ok  served 812.4 qps  p50 3.210 ms  p99 9.870 ms" in text
    assert "ms/img" not in text and "fps" not in text


def test_a_server_under_an_slo_shows_max_qps_at_slo_with_its_slo():
    text = line({**SERVED, "max_qps_at_slo": 640.0}, {"slo": SLO})
    assert f"ok  max_qps_at_slo 640.0 qps under {SLO}  p50 3.210 ms  p99 9.870 ms" in text


def test_an_overloaded_run_says_overloaded_with_its_reason_never_ok():
    reason = ("overloaded at 100,000.0 qps: the oldest request waited over 100 ms, so no "
              "latency is reported")
    text = line({"fps": 2000.0, "infer_ms_per_img": 0.5}, {"overloaded": reason})
    assert text == ("onnx-resnet18-224-b8-server: OVERLOADED at 100,000.0 qps: the oldest "
                    "request waited over 100 ms, so no latency is reported")
    assert " ok" not in text


def test_a_server_that_met_no_rate_says_so():
    met = f"no arrival rate meets {SLO}: even 21.4 qps did not"
    text = line({"fps": 2000.0}, {"slo": SLO, "slo_result": met})
    assert text.endswith(f"SLO NOT MET: {met}") and " ok" not in text


def test_an_offline_line_is_unchanged():
    text = line({"infer_ms_per_img": 1.25, "fps": 800.0}, {})
    assert text.endswith("ok  1.250 ms/img  800.0 fps")


# --- 4: where the stability notes are -----------------------------------------------------------


def test_unsteady_points_a_lone_job_at_its_result_file_and_a_sweep_at_its_report(tmp_path):
    notes = {"stability": ["timing CV 9.0% > 5%: ..."]}
    lone = line({"infer_ms_per_img": 1.0, "fps": 1000.0}, notes, job_dir=tmp_path / "job")
    assert lone.endswith(f"UNSTEADY (1 note: info.stability in {tmp_path / 'job'}/result.json)")
    assert "report" not in lone
    SweepRecord(started=time.time() - 5, total_jobs=2).write(tmp_path)
    swept = line({"infer_ms_per_img": 1.0, "fps": 1000.0}, notes, sweep_dir=tmp_path)
    assert "UNSTEADY (1 note in the report)" in swept


def test_stability_advice_fits_the_device():
    m = {"infer_cv_pct": 30.0}
    (cpu,) = stability_notes(m, {}, 5.0, "cpu")
    (gpu,) = stability_notes(m, {}, 5.0, "cuda")
    assert "lgc" not in cpu and "CUDA" not in cpu and "bench.cpu_affinity" in cpu
    assert "nvidia-smi -lgc" in gpu


def test_a_lone_job_says_where_its_result_went_and_its_mlflow_run(tmp_path):
    job_dir = tmp_path / "outputs" / "2026-01-01" / "10-00-00"
    tracking = MlflowTrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="m")
    result = JobResult(job="j", status="ok", info={"mlflow_run_id": "abc123"})
    text = where_it_went(result, job_dir, tracking)
    assert f"result: {job_dir}/result.json" in text
    assert f"python -m sweep.report {job_dir.parent}" in text
    assert re.search(r"MLflow: mlflow ui --backend-store-uri sqlite:///.*, then open "
                     r"http://127\.0\.0\.1:5000/#/experiments/\d+/runs/abc123$", text), text
    offline = JobResult(job="j", status="ok", info={"mlflow_error": "ConnectionError: no"})
    assert "--log-to-mlflow" in where_it_went(offline, job_dir, tracking)


# --- 2: rounds ----------------------------------------------------------------------------------


def _round(job_dir: Path, number: int, fps: float, digest: str = "d") -> JobResult:
    latest = JobResult(job="torch-b1", status="ok", params={"bench.round": number},
                       metrics={"infer_ms_per_img": 1000 / fps, "fps": fps})
    return rounds.combine(latest, rounds.record(job_dir, number, digest, latest), 3)


def test_a_round_line_shows_its_own_figure_and_one_bar_over_the_plan(tmp_path):
    SweepRecord(started=time.time() - 30, total_jobs=2, rounds=3,
                round_plan=[[1, 0], [0, 1], [1, 0]]).write(tmp_path)
    job_dir = tmp_path / "0_torch-b1"
    job_dir.mkdir()
    _round(job_dir, 1, 100.0)
    result = _round(job_dir, 2, 300.0)  # the medians: of 100 and 300 fps, of 10 and 3.3 ms
    text = progress_line(result, tmp_path, job_dir=job_dir)
    assert text.startswith("[round 2/3] torch-b1: round 2 ok  3.333 ms/img  300.0 fps; "
                           "median of 2 rounds: 6.667 ms/img  200.0 fps"), text
    # job 0 is the first of round 2: 3 of the plan's 6 measurements done, 3 left
    assert "[##########..........] 0 failed, 3 remaining, ETA" in text


# --- 3: did you mean, and pairs refused before any job ------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["bach=8"], "bach is not a key of this config: did you mean batch=8?"),
    (["+bach=8"], "bach is not a key of this config: did you mean batch?"),
    (["-m", "bench.warmpu=1,2"], "bench.warmpu is not a key of this config: did you mean "
                                 "bench.warmup?"),
    (["runtime=onxx"], "runtime='onxx' is not valid: one of compile, onnx, openvino, torch, trt. "
                       "Did you mean runtime=onnx?"),
    (["model=onnx", "model.path=empty.onnx"], "runtime=torch cannot run model=onnx; the runtimes "
                                              "that can: onnx"),
    (["model=onnx", "runtime=onnx", "model.path=missing.onnx"],
     "model.path='missing.onnx' is not valid: no such file."),
    (["model.name=resnet999"], "model.name='resnet999' is not valid: not a torchvision "
                               "classification model"),
])
def test_a_mistake_is_refused_before_any_job_with_what_to_type(tmp_path, cache_dir, args,
                                                               message):
    (tmp_path / "empty.onnx").write_bytes(b"")
    proc = run_cli([*args, "tracking.enabled=false"], tmp_path, cache_dir)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert message in proc.stderr, proc.stderr
    assert "+bach" not in proc.stderr and "Traceback" not in proc.stderr
    assert "building" not in proc.stdout  # no job began
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_the_pair_checks_take_well_under_a_second_once_imported(tmp_path):
    cfgs = [from_container({"model": {"kind": "onnx", "path": str(tmp_path / "m.onnx")}}),
            from_container({"model": {"name": "resnet999"}})]
    pair_refusal(cfgs[1])  # imports torch and torchvision, as the job would
    t0 = time.perf_counter()
    refusals = [pair_refusal(cfg) for cfg in cfgs]
    assert time.perf_counter() - t0 < 1.0
    assert [key for key, _ in refusals] == ["runtime", "model.name"]
    assert pair_refusal(from_container({})) is None  # the default job runs


# --- 4: the spinner on a terminal ---------------------------------------------------------------

SPINNER_SCRIPT = """
import logging.config, warnings, time
from omegaconf import OmegaConf
from sweep import progress
conf = OmegaConf.to_container(OmegaConf.load({yaml!r}))
conf["handlers"].pop("file"); conf["root"]["handlers"] = ["console"]
logging.config.dictConfig(conf)
with progress.phase("job-x", "timing"):
    time.sleep(0.5)
    warnings.warn("a third-party warning", UserWarning)
    logging.getLogger("sweep.job").warning("a log line meanwhile")
    time.sleep(0.5)
print("END", flush=True)
"""


def _on_a_terminal(script: str) -> str:
    """What `script` writes to a terminal (a pty as its stdout and stderr)."""
    main, child = pty.openpty()
    env = {**os.environ, "SWEEP_PROGRESS": "auto", "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=child, stderr=child,
                            env=env, close_fds=True)
    os.close(child)
    out = b""
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        try:
            chunk = os.read(main, 65536) if ready else b""
        except OSError:  # the child closed the terminal
            chunk = b""
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(main)
    return out.decode(errors="replace")


def test_the_spinner_is_not_doubled_and_warnings_print_above_it():
    yaml = str(conf_dir() / "hydra" / "job_logging" / "sweep.yaml")
    out = _on_a_terminal(SPINNER_SCRIPT.format(yaml=yaml))
    assert "END" in out, out
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)  # without cursor moves and colours
    pieces = [p for p in re.split(r"[\r\n]", plain) if p.strip()]
    assert "job-x: timing ..." not in plain  # the spinner shows it; no static line as well
    assert any("job-x: timing" in p and "done" not in p for p in pieces)  # the spinner drew
    for text in ("UserWarning: a third-party warning", "a log line meanwhile"):
        (where,) = [p for p in pieces if text in p]
        assert "job-x" not in where, where  # on a line of its own, not inside the spinner's
    assert any(p.startswith("job-x: timing done in ") for p in pieces)


# --- 2: one "Launching" line for a sweep in rounds ----------------------------------------------


@pytest.mark.slow
def test_a_sweep_in_rounds_prints_hydras_launch_line_once(tmp_path, cache_dir):
    proc = run_cli(["-m", "batch=1,2", "bench.rounds=2", "tracking.enabled=false", *QUICK],
                   tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("Launching") == 1, out
    bars = re.findall(r"\[round (\d)/2\] .*?(\d) remaining", proc.stdout)
    assert [left for _, left in bars] == ["3", "2", "1", "0"], proc.stdout
    sweep_dir = only_sweep_dir(tmp_path)
    assert json.loads((sweep_dir / "sweep.json").read_text())["rounds"] == 2
