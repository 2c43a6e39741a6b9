"""notebooks/compare.ipynb: stored without outputs, and it runs on a real tiny sweep, loaded
from MLflow and from summary.csv."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import QUICK, only_sweep_dir, run_cli
from nbclient import NotebookClient

from sweep.paths import find, find_store

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code"
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])  # the first cell: which sweep
    for name in ("SWEEP_DIR", "EXPERIMENT", "TRACKING_URI"):
        assert f"{name} = " in code[0].source


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> tuple[Path, Path]:
    cwd = tmp_path_factory.mktemp("nb")
    proc = run_cli(["-m", "batch=1,2", "tracking.experiment=nb", *QUICK], cwd,
                   tmp_path_factory.mktemp("cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, only_sweep_dir(cwd)


def execute(cwd: Path, parameters: str) -> nbformat.NotebookNode:
    """Run the notebook in `cwd` with `parameters` injected after its parameters cell."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(parameters,
                                                      metadata={"tags": ["injected-parameters"]}))
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> tuple[str, int]:
    """All printed text, and how many PNG images the notebook drew."""
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") + out.get("data", {}).get("text/markdown", ""))
            images += "image/png" in out.get("data", {})
    return "".join(text), images


@pytest.mark.slow
@pytest.mark.parametrize(("source", "where"), [("mlflow", "."), ("mlflow", "notebooks"),
                                               ("summary.csv", "notebooks")])
def test_notebook_runs_on_a_tiny_sweep(tiny_sweep, source, where):
    """Started at the root or, as Jupyter usually is, in notebooks/: the relative store and
    sweep folder are found in the folder above."""
    root, sweep_dir = tiny_sweep
    cwd = root / where
    cwd.mkdir(exist_ok=True)
    if source == "mlflow":  # the default TRACKING_URI, sqlite:///mlflow.db, relative
        params = "EXPERIMENT = 'nb'"
    else:
        params = f"SWEEP_DIR = '{sweep_dir.relative_to(root)}'"
    nb = execute(cwd, params)
    text, images = _outputs(nb)
    stderr = [out.get("text", "") for cell in nb.cells for out in cell.get("outputs", [])
              if out.get("name") == "stderr"]
    assert not stderr, stderr  # no download bars, no third-party warnings
    name = f"batch=1,2 ({sweep_dir.parent.name}/{sweep_dir.name})"
    assert f"{name}: 2 jobs, 2 ok; varying: batch" in text
    assert "## Recommendation" in text and "## runtime=torch" in text
    assert "FPS (images/s) vs batch at resolution=32" in text
    assert images >= 1
    assert not (cwd / "mlflow.db").exists() or where == "."  # no empty store made beside it


def test_relative_paths_are_found_above_or_named_when_missing(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"")
    (tmp_path / "notebooks").mkdir()
    found = find_store("sqlite:///mlflow.db", tmp_path / "notebooks")
    assert found == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert find_store("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert find(tmp_path / "mlflow.db", "the store") == tmp_path / "mlflow.db"  # absolute
    with pytest.raises(FileNotFoundError, match="the sweep's summary 'multirun/x/summary.csv' "
                                                "is not in .*notebooks nor in any folder above"):
        find("multirun/x/summary.csv", "the sweep's summary", tmp_path / "notebooks")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find(tmp_path / "missing.db", "the MLflow store")
