"""sweep.progress: phases with their elapsed time as plain lines (logs, CI) and in place on a
terminal, and the sweep bar's counts and ETA."""

from __future__ import annotations

import logging
import time

import pytest

from sweep import progress


def test_phase_logs_start_end_and_heartbeats(caplog, monkeypatch):
    monkeypatch.setenv("SWEEP_PROGRESS", "plain")
    with caplog.at_level(logging.INFO, logger="sweep.progress"):
        with progress.phase("job-a", "compiling", heartbeat_s=0.05):
            time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "job-a: compiling ..."
    assert any(line.startswith("job-a: still compiling, ") for line in lines[1:-1]), lines
    assert lines[-1].startswith("job-a: compiling done in ") and lines[-1].endswith(" s")
    seconds = float(lines[-1].split(" in ")[1].split()[0])
    assert 0.3 <= seconds < 30  # at least the sleep; the bound only catches a unit error


def test_phase_says_when_it_stopped_on_an_error(caplog, monkeypatch):
    monkeypatch.setenv("SWEEP_PROGRESS", "plain")
    with caplog.at_level(logging.INFO, logger="sweep.progress"):
        with pytest.raises(ValueError), progress.phase("job-b", "exporting"):
            raise ValueError("boom")
    assert caplog.records[-1].getMessage().startswith("job-b: exporting stopped after ")


def test_live_phase_draws_on_stderr_and_still_logs(caplog, capsys, monkeypatch):
    monkeypatch.setenv("SWEEP_PROGRESS", "live")
    assert progress.live()
    with caplog.at_level(logging.INFO, logger="sweep.progress"):
        with progress.phase("job-c", "timing"):
            time.sleep(0.2)
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == [
        "job-c: timing ...", "job-c: timing done"]
    assert capsys.readouterr().out == ""  # the spinner never writes to stdout


def test_sweep_bar_counts_and_eta():
    assert progress.sweep_bar(2, 1, 8, 20.0) == (
        "[#####...............] 1 failed, 6 remaining, ETA 1m00s")
    assert progress.sweep_bar(8, 0, 8, 20.0) == "[####################] 0 failed, 0 remaining"
    assert progress.sweep_bar(0, 0, 4, 1.0).endswith("4 remaining")  # no rate yet: no ETA
    assert progress.sweep_bar(3, 0, None, 1.0) == "0 failed, ? remaining"


def test_console_formatter_prints_progress_bare_and_warnings_with_their_level():
    fmt = progress.ConsoleFormatter()
    info = logging.LogRecord("sweep.progress", logging.INFO, __file__, 1, "[1/2] x: ok", (), None)
    warn = logging.LogRecord("sweep.job", logging.WARNING, __file__, 1, "differs", (), None)
    assert fmt.format(info) == "[1/2] x: ok"
    assert fmt.format(warn).endswith("[sweep.job][WARNING] - differs")
