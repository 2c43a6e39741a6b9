"""The wheel carries sweep/conf (the Hydra groups), and `python -m sweep` finds it from anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the project: a build in the checkout itself writes its
    build/ and egg-info there, where another worker's build or editable install may be writing."""
    out = tmp_path_factory.mktemp("wheel")
    project = out / "project"
    project.mkdir()
    shutil.copy(ROOT / "pyproject.toml", project)
    shutil.copy(ROOT / "README.md", project)
    shutil.copytree(ROOT / "src", project / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "--no-build-isolation", "-w", str(out), str(project)],
                          capture_output=True, text=True, cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(out.glob("*.whl"))


def test_wheel_holds_every_config_and_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for suffix in ("*.yaml", "*.py"):
        for path in (ROOT / "src").rglob(suffix):
            assert path.relative_to(ROOT / "src").as_posix() in names


def test_installed_wheel_composes_from_another_folder(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-m", "sweep", "--cfg", "job", "runtime=onnx"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "opset: 18" in proc.stdout
    where = subprocess.run([sys.executable, "-c", "import sweep.paths as p; print(p.conf_dir())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True).stdout
    assert where.strip() == str(target / "sweep" / "conf")
