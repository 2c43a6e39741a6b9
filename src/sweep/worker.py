"""`python -m sweep.worker JOB_DIR`: run the job whose resolved config is JOB_DIR/config.yaml
(isolation=process). Its result.json is the only thing the parent reads back."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from sweep.config import from_container
from sweep.job import run_job
from sweep.result import read_config


def main(argv: list[str]) -> int:
    job_dir = Path(argv[0])
    # progress phases and warnings as plain lines into worker.log, as app.log has them
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - "
                        "%(message)s")
    # the parent validated this config before it started the worker
    result = run_job(from_container(read_config(job_dir)), job_dir)
    return 0 if result.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
