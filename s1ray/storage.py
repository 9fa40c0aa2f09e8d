"""Checkpoints and Tune state are loaded only from local storage the run owns.

DeepSpeed checkpoints, Ray Train checkpoints and Tune experiment state are unpickled when a run
resumes: whoever can write those files can run code in every training worker. On a shared
machine or mount, a folder that is world-writable, or owned by another user, is refused before
anything in it is loaded. Remote storage (``s3://``, ``gs://``, ...) is governed by the cloud
account's permissions (README "Least privilege") and is not checked here.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "az://", "hdfs://", "http://", "https://")


class UnsafeStorageError(PermissionError):
    """A checkpoint or state folder that another user could have written; the message says how."""


def _trusted_owners() -> set[int]:
    return {os.geteuid(), 0}  # root can change anything anyway


def _problem(st: os.stat_result) -> str | None:
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in _trusted_owners():
        return f"is owned by uid {st.st_uid}, not by this process (uid {os.geteuid()})"
    if mode & stat.S_IWOTH and not stat.S_ISLNK(st.st_mode):  # a link's own mode is always 0777
        return f"is world-writable (mode {mode:04o})"
    return None


def check_owned(path: str | os.PathLike, what: str = "checkpoint") -> None:
    """Refuse a local ``path`` (folder or file) that another user could have written.

    Checked: ``path`` itself and everything under it (owned by this user or root, not
    world-writable), and its ancestors (not world-writable unless sticky, like ``/tmp``).
    A path that does not exist yet passes (nothing to load); remote URIs are not checked.
    """
    text = os.fspath(path)
    if text.startswith(REMOTE_SCHEMES) or not os.path.lexists(text):
        return
    target = Path(text).resolve()
    fix = (f"(chmod -R o-w {target}, or copy it into a folder you own, e.g. under "
           f"$S1RAY_STORAGE created by this user)")
    for ancestor in reversed(target.parents):
        st = ancestor.stat()
        mode = stat.S_IMODE(st.st_mode)
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            raise UnsafeStorageError(
                f"{what} {target}: parent folder {ancestor} is world-writable (mode {mode:04o}) without the "
                f"sticky bit, so anyone could replace the {what} before it is loaded {fix}")
    entries = [(target, target.stat())]
    if target.is_dir():
        for root, dirs, files in os.walk(target):
            for name in dirs + files:
                p = Path(root) / name
                entries.append((p, p.lstat()))
                if p.is_symlink() and p.exists():  # a link may point outside: its target must be safe too
                    entries.append((p.resolve(), p.stat()))
    for p, st in entries:
        problem = _problem(st)
        if problem:
            where = "" if p == target else f" ({p})"
            raise UnsafeStorageError(
                f"{what} {target}{where} {problem}: its files are unpickled when the run resumes, so only "
                f"storage this run owns is loaded {fix}")
