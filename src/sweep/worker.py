"""`python -m sweep.worker JOB_DIR`: run the job whose resolved config is JOB_DIR/config.yaml
(isolation=process). Its result.json is the only thing the parent reads back."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf


def main(argv: list[str]) -> int:
    from sweep.job import run_from_container

    job_dir = Path(argv[0])
    data = OmegaConf.to_container(OmegaConf.load(job_dir / "config.yaml"), resolve=True)
    result = run_from_container(data, job_dir)
    return 0 if result.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
