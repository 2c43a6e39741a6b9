"""Folders and files others can write are never trusted: the artifact cache (whose entries are
loaded as code) and the GPU lease's lock files (opened at a predictable path)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from conftest import QUICK, run_cli

from sweep.cache import ArtifactCache
from sweep.errors import ConfigError
from sweep.isolation import gpu_lease
from sweep.trust import untrusted

NOBODY = 65534


def test_a_private_cache_is_trusted_and_made_private(tmp_path):
    root = tmp_path / "cache"
    cache = ArtifactCache.open(str(root))
    assert cache.root == root and (root.stat().st_mode & 0o777) == 0o700
    assert untrusted(root) is None


@pytest.mark.parametrize("how", ["group-writable", "world-writable", "foreign owner",
                                 "foreign entry"])
def test_a_cache_others_can_write_is_refused_with_the_fix(tmp_path, how):
    root = tmp_path / "shared"
    (root / "onnx" / "entry").mkdir(parents=True)
    root.chmod(0o755)
    if how == "group-writable":
        root.chmod(0o775)
    elif how == "world-writable":
        root.chmod(0o777)
    elif how == "foreign owner":
        os.chown(root, NOBODY, NOBODY)
    else:  # an entry planted by another user while the folder was open to them
        os.chown(root / "onnx" / "entry", NOBODY, NOBODY)
    with pytest.raises(ConfigError) as e:
        ArtifactCache.open(str(root))
    text = str(e.value)
    assert text.startswith(f"cache_dir='{root}'") and "only you can write" in text
    assert "chmod -R go-w" in text and "SWEEP_CACHE_DIR" in text


def test_a_folder_above_the_cache_open_to_others_is_refused_unless_sticky(tmp_path):
    above = tmp_path / "open"
    (above / "cache").mkdir(parents=True)
    (above / "cache").chmod(0o755)
    above.chmod(0o777)
    assert "a folder above it, is writable by other users" in untrusted(above / "cache")
    above.chmod(0o1777)  # as /tmp: others cannot rename or replace what is ours
    assert untrusted(above / "cache") is None


@pytest.mark.slow
def test_a_planted_compiled_graph_in_a_shared_cache_never_runs(tmp_path):
    """A compile job fills the cache; another user replaces its compiled graphs with pickles
    that run a command, in a cache folder open to them: the next job is refused, nothing runs."""
    cache, marker = tmp_path / "cache", tmp_path / "ran"
    args = ["runtime=compile", *QUICK]
    first = run_cli(args, tmp_path, cache)
    assert first.returncode == 0, first.stderr[-2000:]
    planted = _plant(cache / "inductor", marker)
    assert planted
    cache.chmod(0o777)
    second = run_cli(args, tmp_path, cache)
    assert second.returncode != 0
    assert "cache_dir=" in second.stderr and "only you can write" in second.stderr
    assert not marker.exists()


def _plant(root: Path, marker: Path) -> int:
    """Every pickled file of inductor's FX graph and AOTAutograd caches replaced by a pickle
    that runs `touch marker` when loaded."""
    import pickle

    class Plant:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    payload = pickle.dumps(Plant())
    n = 0
    for path in root.rglob("*"):
        if path.is_file() and any(p in ("fxgraph", "aotautograd") for p in path.parts):
            path.write_bytes(payload)
            n += 1
    return n


def test_lock_files_live_in_a_private_folder_and_never_follow_a_link(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    with gpu_lease([0]) as gpu:
        assert gpu == 0
    folder = tmp_path / f"sweep-gpu-locks-{os.getuid()}"
    assert (folder.stat().st_mode & 0o777) == 0o700
    (folder / "gpu1.lock").symlink_to(victim)  # a link where a lock file will be opened
    with pytest.raises(OSError), gpu_lease([1]):
        pass
    assert victim.read_text() == "keep me"


def test_a_lock_folder_planted_by_someone_else_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / f"sweep-gpu-locks-{os.getuid()}").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PermissionError, match="not a private folder"), gpu_lease([0]):
        pass
