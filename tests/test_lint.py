"""ruff (lint, import order, line length: pyproject's [tool.ruff]) and import-linter (the layer
contracts: [tool.importlinter]) over the code, as part of the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-5000:]


def test_import_layers_hold():
    """pyproject's [tool.importlinter] contracts: no module imports a layer above its own, no
    cycles, mlflow only in the tracking store, no deep-learning runtime under the reports."""
    run = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    proc = subprocess.run([sys.executable, "-c", run, "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "0 broken" in proc.stdout


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
