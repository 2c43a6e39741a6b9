"""`python -m sweep --help` is this tool's help: what it does, the groups a user picks (from
sweep/conf/, never the internal schema/* groups), examples, and where results go."""

from __future__ import annotations

from conftest import run_cli

from sweep.paths import conf_dir


def test_help_is_written_for_this_tool(tmp_path, cache_dir):
    proc = run_cli(["--help"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert text.startswith("sweep: measure neural-network inference")
    assert "powered by Hydra" not in text and "schema/" not in text
    for group in ("runtime", "model", "pipeline", "scenario", "experiment", "case", "tracking"):
        options = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
        assert f"  {group + ':':<17}{', '.join(options)}" in text, group
    assert "hydra/launcher:" in text and "optuna" in text
    examples = [line for line in text.splitlines() if line.strip().startswith("python -m sweep")]
    assert len(examples) >= 3
    assert "== Where results go ==" in text and "multirun/<date>/<time>" in text
    assert not list(tmp_path.iterdir())  # help runs nothing and writes nothing
