"""The lifecycle's parts alone: the Outcome a process ends with (its exit status), the sweep
record on disk (round trip, masked secrets, an old file's unknown keys) and the objective. The
whole life runs in the subprocess multiruns of test_sweep, test_faults and test_reliability."""

from __future__ import annotations

import json
import math
import signal

from sweep.config import TrackingConfig
from sweep.lifecycle.multirun import Terminated, run_to_exit_status
from sweep.lifecycle.one_job import objective
from sweep.lifecycle.outcome import Outcome
from sweep.result import SWEEP_FILE, JobResult, SweepRecord


def test_a_lone_job_that_fails_makes_the_exit_status_1():
    outcome = Outcome()
    outcome.job_ended(ok=True, saved=True, in_multirun=False)
    assert outcome.exit_status() == 0
    outcome.job_ended(ok=False, saved=True, in_multirun=False)
    assert (outcome.failed_jobs, outcome.exit_status()) == (1, 1)


def test_a_multiruns_failures_count_at_its_end_with_its_unsaved_jobs():
    outcome = Outcome(open_parent=(TrackingConfig(), "run-1"))
    outcome.job_ended(ok=False, saved=False, in_multirun=True)
    assert (outcome.failed_jobs, outcome.unsaved_jobs, outcome.exit_status()) == (0, 1, 0)
    outcome.sweep_ended(failed=2, reported=True)
    assert (outcome.failed_jobs, outcome.exit_status(), outcome.open_parent) == (2, 1, None)


def test_a_sweep_without_its_report_fails_even_when_every_job_was_fine():
    outcome = Outcome()
    outcome.sweep_ended(failed=0, reported=False)
    assert outcome.exit_status() == 1


def test_a_signal_gives_128_plus_its_number_and_a_finished_run_the_outcomes_status(capsys):
    def killed():
        raise Terminated()

    assert run_to_exit_status(killed, Outcome()) == 128 + signal.SIGTERM
    assert "sweep ended by SIGTERM" in capsys.readouterr().err
    assert run_to_exit_status(lambda: None, Outcome(failed_jobs=3)) == 1
    assert run_to_exit_status(lambda: None, Outcome()) == 0


def test_the_sweep_record_round_trips_with_its_secrets_masked(tmp_path):
    record = SweepRecord(started=12.5, overrides=["batch=1,8", "+api_token=s3cret"],
                         total_jobs=2, parent_run_id="abc",
                         tracking_uri="http://user:pa55@host:5000", rounds=2,
                         round_plan=[[1, 0], [0, 1]])
    record.write(tmp_path)
    text = (tmp_path / SWEEP_FILE).read_text()
    assert "s3cret" not in text and "pa55" not in text
    back = SweepRecord.read(tmp_path)
    assert back.overrides == ["batch=1,8", "+api_token=***"]
    assert back.tracking_uri == "http://user:***@host:5000"
    assert (back.started, back.total_jobs, back.parent_run_id, back.rounds, back.round_plan) == (
        12.5, 2, "abc", 2, [[1, 0], [0, 1]])
    assert back.swept == ("batch",)


def test_the_sweep_record_writes_the_keys_a_multiruns_start_wrote(tmp_path):
    """The four keys always, the others only once set (as the untyped file had them)."""
    SweepRecord(started=1.0, overrides=["batch=1"]).write(tmp_path)
    written = json.loads((tmp_path / SWEEP_FILE).read_text())
    assert list(written) == ["started", "overrides", "total_jobs", "parent_run_id"]
    SweepRecord.note_offline(tmp_path, "ConnectionError: down")
    written = json.loads((tmp_path / SWEEP_FILE).read_text())
    assert written["tracking_offline"] == "ConnectionError: down" and written["started"] == 1.0


def test_an_old_record_with_an_unknown_key_is_read_and_the_key_kept(tmp_path):
    (tmp_path / SWEEP_FILE).write_text(json.dumps(
        {"started": 3.0, "overrides": None, "parent_run_id": "p", "made_by": "0.1"}))
    record = SweepRecord.read(tmp_path)
    assert (record.started, record.overrides, record.parent_run_id) == (3.0, [], "p")
    assert record.unknown == {"made_by": "0.1"}
    record.rounds = 2
    record.write(tmp_path)
    assert json.loads((tmp_path / SWEEP_FILE).read_text())["made_by"] == "0.1"


def test_a_missing_or_unreadable_record_reads_as_an_empty_one(tmp_path):
    assert SweepRecord.read(tmp_path) == SweepRecord()
    (tmp_path / SWEEP_FILE).write_text("[1, 2")
    assert SweepRecord.read(tmp_path) == SweepRecord()
    (tmp_path / SWEEP_FILE).write_text("[1, 2]")
    assert SweepRecord.read(tmp_path) == SweepRecord()


def test_the_objective_is_the_headline_or_nan():
    ok = JobResult(job="j", status="ok", metrics={"fps": 10.0, "max_qps_at_slo": 4.0})
    assert objective(ok) == 10.0
    ok.params["scenario.slo_ms"] = 50
    assert objective(ok) == 4.0
    assert math.isnan(objective(JobResult(job="j", status="failed")))
    assert math.isnan(objective(JobResult(job="j", status="ok", metrics={"fps": 1.0,
                                                                           "correct": 0})))
