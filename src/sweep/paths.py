"""Where the configuration and the artifact cache live."""

from __future__ import annotations

import os
from pathlib import Path


def conf_dir() -> Path:
    """The Hydra groups, `sweep/conf/`: in the source tree and in the installed wheel alike."""
    return Path(__file__).parent / "conf"


def cache_dir(configured: str | None = None) -> Path:
    """Artifact cache: `cache_dir` from the config, else $SWEEP_CACHE_DIR, else ~/.cache/sweep."""
    path = configured or os.environ.get("SWEEP_CACHE_DIR") or Path.home() / ".cache" / "sweep"
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)  # private: its entries are loaded as code
    return path


def find(path: str | Path, what: str, start: str | Path | None = None) -> Path:
    """`path` as given when absolute; a relative one looked up in `start` (the working
    directory) and then each folder above it, so a notebook run from `notebooks/` finds the
    repository's `multirun/` and `mlflow.db`. A FileNotFoundError names every place tried."""
    path = Path(path).expanduser()
    if path.is_absolute():
        if path.exists():
            return path
        raise FileNotFoundError(f"{what} {path} does not exist")
    here = Path(start or Path.cwd()).resolve()
    tried = [folder / path for folder in (here, *here.parents)]
    for candidate in tried:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{what} {str(path)!r} is not in {here} nor in any folder above it "
                            f"(looked for {', '.join(str(t) for t in tried[:4])}, ...); "
                            "give an absolute path, or run the sweep first")


def find_store(uri: str, start: str | Path | None = None) -> str:
    """A `sqlite:///relative.db` tracking URI made absolute by `find` (instead of MLflow
    silently creating an empty database in the working directory); other URIs unchanged."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    return prefix + str(find(uri[len(prefix):], "the MLflow store", start))
