"""`python -m sweep.worker JOB_DIR`: run the job whose resolved config is JOB_DIR/config.yaml
(isolation=process). Its result.json is the only thing the parent reads back."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from sweep.config import from_container
from sweep.job import run_job
from sweep.redact import install_log_filter
from sweep.result import read_config


def _die_with_parent() -> None:
    """End this worker when its launcher dies, even by SIGKILL (which the launcher cannot
    pass on): Linux's parent-death signal, then a check that the launcher is still there."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    parent = os.environ.get("SWEEP_PARENT_PID")
    if parent and int(parent) != os.getppid():  # it died before the line above
        os._exit(1)


def main(argv: list[str]) -> int:
    _die_with_parent()
    install_log_filter()
    job_dir = Path(argv[0])
    # progress phases and warnings as plain lines into worker.log, as app.log has them
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - "
                        "%(message)s")
    # the parent validated this config before it started the worker
    result = run_job(from_container(read_config(job_dir)), job_dir)
    return 0 if result.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
