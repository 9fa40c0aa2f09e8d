"""Checkpoints, Tune state and saved parts are loaded only from local storage the run owns.

DeepSpeed checkpoints, Ray Train checkpoints and Tune experiment state are unpickled when a run
resumes: whoever can write those files can run code in every training worker. The curate cache,
a stage's saved ``parts/`` and evaluation ``parts-*`` become training data and results. On a
shared machine or mount, storage another user could have written or swapped is refused before
anything in it is read:

* the folder (or file) and everything under it: owned by this user (or root), and writable by
  no one else (group-writable only when the group is this user's private group, as on systems
  whose users each have a group of their own and a umask of 002);
* every folder above it: owned by this user or root, and not writable by others unless sticky
  (``/tmp``: others may add entries but not rename or remove this user's). A folder above that
  belongs to another user is refused: its owner can rename the whole tree away and put another
  in its place.

``file://`` URIs are local paths. Other URIs (``s3://``, ``gs://``, ...) are governed by the
cloud account's permissions (docs/security.md) and are not checked here.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit


class UnsafeStorageError(PermissionError):
    """A checkpoint or state folder that another user could have written; the message says how."""


def _trusted_owners() -> set[int]:
    return {os.geteuid(), 0}  # root can change anything anyway


@functools.lru_cache(maxsize=64)
def _private_group(gid: int, uid: int) -> bool:
    """Is ``gid`` a group only ``uid`` is in (no other member, nobody else's primary group)?"""
    try:
        group = grp.getgrgid(gid)
        me = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    if set(group.gr_mem) - {me}:
        return False
    return all(p.pw_uid == uid for p in pwd.getpwall() if p.pw_gid == gid)


def _writable_by_others(st: os.stat_result) -> str | None:
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH:
        return f"is world-writable (mode {mode:04o})"
    if mode & stat.S_IWGRP and not _private_group(st.st_gid, os.geteuid()):
        return f"is group-writable (mode {mode:04o}, gid {st.st_gid}, a group other users are in)"
    return None


def _problem(st: os.stat_result) -> str | None:
    if st.st_uid not in _trusted_owners():
        return f"is owned by uid {st.st_uid}, not by this process (uid {os.geteuid()})"
    if stat.S_ISLNK(st.st_mode):  # a link's own mode is always 0777; its target is checked on its own
        return None
    return _writable_by_others(st)


def _ancestor_problem(folder: Path) -> str | None:
    st = folder.stat()
    if st.st_uid not in _trusted_owners():
        return (f"parent folder {folder} is owned by uid {st.st_uid}, not by this process (uid {os.geteuid()}) "
                f"or root, so its owner could swap what is inside")
    writable = _writable_by_others(st)
    if writable and not st.st_mode & stat.S_ISVTX:
        return f"parent folder {folder} {writable} without the sticky bit, so others could swap what is inside"
    return None


def local_path(path: str | os.PathLike) -> Path | None:
    """``path`` as a local path (``file://`` URIs included); None for a remote URI."""
    text = os.fspath(path)
    if "://" not in text:
        return Path(text)
    parts = urlsplit(text)
    if parts.scheme.lower() != "file":
        return None
    if parts.netloc not in ("", "localhost"):
        raise UnsafeStorageError(f"{text}: a file:// URI must name this machine (file:///path), not {parts.netloc!r}")
    return Path(unquote(parts.path))


def check_owned(path: str | os.PathLike, what: str = "checkpoint") -> None:
    """Refuse a local ``path`` (folder or file) that another user could have written or swapped.

    A path that does not exist yet passes (nothing to load); remote URIs are not checked.
    """
    if not os.fspath(path):  # no path given (Path("") would be the working directory)
        return
    local = local_path(path)
    if local is None or not os.path.lexists(local):
        return
    given = Path(os.path.abspath(local))
    target = local.resolve()
    fix = (f"(chmod -R go-w {target}, or copy it into a folder you own, e.g. under "
           f"$S1RAY_STORAGE created by this user)")
    # Both the path as given and where links lead: a link on the way lives in a folder too.
    for ancestor in dict.fromkeys([*reversed(given.parents), *reversed(target.parents)]):
        problem = _ancestor_problem(ancestor)
        if problem:
            raise UnsafeStorageError(f"{what} {target}: {problem} before it is loaded {fix}")
    entries = [(target, target.stat())]
    if target.is_dir():
        for root, dirs, files in os.walk(target):
            for name in dirs + files:
                p = Path(root) / name
                entries.append((p, p.lstat()))
                if p.is_symlink() and p.exists():  # a link may point outside: its target must be safe too
                    real = p.resolve()
                    entries.append((real, real.stat()))
                    for ancestor in real.parents:
                        problem = _ancestor_problem(ancestor)
                        if problem:
                            raise UnsafeStorageError(f"{what} {target} ({p} -> {real}): {problem} {fix}")
    for p, st in entries:
        problem = _problem(st)
        if problem:
            where = "" if p == target else f" ({p})"
            raise UnsafeStorageError(
                f"{what} {target}{where} {problem}: its files are loaded when the run resumes, so only "
                f"storage this run owns is read {fix}")
