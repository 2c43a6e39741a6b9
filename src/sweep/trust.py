"""Whether a folder on disk may be trusted with what the tool will load or lock from it: only
this user (or root) can have written it, as ssh requires of its keys' folders. A cache that
another user can write lets them plant a pickled artifact that the next job executes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

_TRUSTED_OWNERS = {0}  # root; the current user is added at call time
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def untrusted(path: Path, walk: bool = True) -> str | None:
    """Why `path` (a folder) cannot be trusted, or None: the folder, each folder above it, and
    (with `walk`) everything under it must be owned by this user or root and writable by no one
    else; a folder above it may be writable by others only with the sticky bit (as /tmp is)."""
    owners = _TRUSTED_OWNERS | {os.getuid()}
    path = Path(path).absolute()
    for above in reversed(path.parents):
        st = os.stat(above)
        if st.st_uid not in owners:
            return f"{above}, a folder above it, is owned by uid {st.st_uid}"
        if st.st_mode & _OTHERS_WRITE and not st.st_mode & stat.S_ISVTX:
            return f"{above}, a folder above it, is writable by other users " \
                   f"(mode {stat.S_IMODE(st.st_mode):o})"
    found = _bad_entry(path, owners)
    if found or not walk or not os.stat(path).st_mode & (stat.S_IXGRP | stat.S_IXOTH):
        return found  # a folder no one else can enter: nothing under it is theirs to write
    for folder, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            if found := _bad_entry(Path(folder) / name, owners):
                return found
    return None


def _bad_entry(path: Path, owners: set[int]) -> str | None:
    st = os.lstat(path)
    if st.st_uid not in owners:
        return f"{path} is owned by uid {st.st_uid}, not by you"
    if st.st_mode & _OTHERS_WRITE and not stat.S_ISLNK(st.st_mode):
        return f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def private_dir(path: Path) -> Path:
    """`path` made (mode 0700) or checked as a folder of this user's that no one else can write
    and that is not a symbolic link; OSError otherwise."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} is not a private folder of this user's (a link, "
                              "another user's, or open to others): remove it, or set TMPDIR "
                              "to a folder of your own")
    return path
