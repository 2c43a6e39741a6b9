"""ruff (lint and import order, pyproject's [tool.ruff]) over the code, as part of the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-5000:]


def test_every_script_compiles():
    """What ruff's parser lets through but Python refuses (e.g. a name used before its `global`
    declaration): the GPU scripts only run on the lent machine, so compile them all here."""
    bad = []
    for path in sorted([*ROOT.glob("src/**/*.py"), *ROOT.glob("benchmarks/**/*.py")]):
        try:
            compile(path.read_text(), str(path), "exec")
        except SyntaxError as e:
            bad.append(f"{path.relative_to(ROOT)}:{e.lineno}: {e.msg}")
    assert not bad, "\n".join(bad)
