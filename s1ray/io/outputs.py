"""A run's outputs as one unit, written by one run at a time.

Why: two runs on one ``output_dir`` deleted each other's files, and a run killed (or out of
disk) half-way left new and old files side by side. Here a run

1. takes a lock on ``output_dir`` (:func:`output_lock`): a file created with ``O_CREAT|O_EXCL``
   (atomic on local disks and on NFS v3+, unlike ``flock``) holding host, pid, the pid's start
   time, run id and start time. A second run fails at once naming the holder. A lock whose
   process is gone (same host, pid dead or reused) is broken; one from another host is never
   broken automatically: the message says which file to delete once that run is known dead.
2. writes everything into ``output_dir/.s1ray-staging/<run id>/`` (:class:`StagedOutputs`);
3. commits: fsyncs every staged file, writes ``MANIFEST.json`` into the staging folder
   (the commit point), renames each output into place, writes ``output_dir/manifest.json``
   (run id, config hash, files with sizes and row counts) last and removes the staging folder.

A run killed before the commit point leaves the previous outputs untouched (its staging folder
is deleted by the next run). A run killed during the renames leaves a committed staging folder
that the next run holding the lock finishes first (:func:`recover`), so ``output_dir`` always
ends up holding one run's complete outputs. :func:`verify_outputs` checks files against the
manifest. Disk-full errors name the path and what to do (:func:`disk_errors`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

LOCK_NAME = ".s1ray.lock"
STAGING = ".s1ray-staging"
MANIFEST = "manifest.json"
_COMMIT = "MANIFEST.json"  # inside a staging folder: present = committed
_OLD = ".replaced"  # inside a staging folder: previous outputs moved aside during the swap
_UNWRITTEN_LOCK_S = 60  # an empty lock file older than this was left by a crash while writing it
_SPACE = (errno.ENOSPC, errno.EDQUOT)


class OutputError(RuntimeError):
    """Outputs that cannot be written (disk full, folder busy); the message names the path."""


class OutputsBusyError(OutputError):
    """Another run holds the lock on the output folder."""


# --- durability ---------------------------------------------------------------------------

def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make renames and new names in ``path`` durable (a no-op where directories cannot be fsynced)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_file(Path(folder) / name)
        fsync_dir(folder)


def disk_full_message(path: str | Path, err: OSError, keep: str = "") -> str:
    what = "disk quota exceeded" if err.errno == errno.EDQUOT else "no space left on device"
    return (f"{what} while writing {path}: free space on that filesystem (or set output_dir to one with "
            f"room) and run again; {keep or 'nothing was half-written'}")


@contextmanager
def disk_errors(path: str | Path, keep: str = "") -> Iterator[None]:
    """Turn a disk-full ``OSError`` into an :class:`OutputError` that names ``path``."""
    try:
        yield
    except OSError as e:
        if e.errno in _SPACE or "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
            raise OutputError(disk_full_message(path, e, keep)) from None
        raise


def write_text_durable(path: Path, text: str) -> None:
    """Write a small file with temp file, fsync and rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


# --- the lock -----------------------------------------------------------------------------

def _pid_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in (...) may hold spaces


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    now = _pid_start(pid)
    return start is None or now is None or now == start


@dataclass(frozen=True)
class LockInfo:
    host: str
    pid: int
    pid_start: str | None
    run_id: str
    command: str
    started: str

    def describe(self) -> str:
        return f"{self.command} run {self.run_id} (host {self.host}, pid {self.pid}, started {self.started})"


def _read_lock(path: Path) -> LockInfo | None:
    """The holder, or None when the file is gone, empty or not a lock we wrote."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LockInfo(**{k: data[k] for k in LockInfo.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_stale(path: Path, holder: LockInfo | None) -> bool:
    if holder is None:  # empty or garbled: stale only once its writer has surely finished
        try:
            return time.time() - path.stat().st_mtime > _UNWRITTEN_LOCK_S
        except FileNotFoundError:
            return False
    return holder.host == socket.gethostname() and not _alive(holder.pid, holder.pid_start)


def _create_exclusive(path: Path, text: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _break_stale(path: Path) -> bool:
    """Remove ``path`` if it is still a stale lock. A second exclusive file serialises breakers,
    so two runs that both saw the same stale lock cannot each remove the other's new lock."""
    breaker = path.with_name(path.name + ".break")
    me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _pid_start(os.getpid())})
    if not _create_exclusive(breaker, me):
        try:
            other = json.loads(breaker.read_text())
            dead = other["host"] == socket.gethostname() and not _alive(other["pid"], other.get("pid_start"))
        except (OSError, ValueError, KeyError, TypeError):
            dead = False
        if not dead:
            return False
        breaker.unlink(missing_ok=True)
        if not _create_exclusive(breaker, me):
            return False
    try:
        if _is_stale(path, _read_lock(path)):
            path.unlink(missing_ok=True)
            return True
        return False
    finally:
        breaker.unlink(missing_ok=True)


def acquire_lock(output_dir: str | Path, command: str, run_id: str | None = None) -> LockInfo:
    """Take the lock on ``output_dir`` or raise :class:`OutputsBusyError` naming its holder."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = LockInfo(host=socket.gethostname(), pid=os.getpid(), pid_start=_pid_start(os.getpid()),
                  run_id=run_id or new_run_id(), command=command,
                  started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    text = json.dumps(me.__dict__)
    for _ in range(3):
        with disk_errors(path, "no output was changed"):
            if _create_exclusive(path, text):
                return me
        holder = _read_lock(path)
        if _is_stale(path, holder):
            _break_stale(path)
            continue
        who = holder.describe() if holder else "a run that is still writing the lock file"
        hint = ("wait for it, or use another output_dir" if holder is None or holder.host == me.host else
                f"if that run is dead, delete {path} by hand (a lock from another host is never broken "
                "automatically)")
        raise OutputsBusyError(f"{folder} is in use by {who}: one run writes an output folder at a time; {hint}")
    raise OutputsBusyError(f"{folder}: could not take the lock {path} (it keeps reappearing)")


def release_lock(output_dir: str | Path, lock: LockInfo) -> None:
    """Remove the lock if it is still ours."""
    path = Path(output_dir) / LOCK_NAME
    holder = _read_lock(path)
    if holder is not None and holder.run_id == lock.run_id:
        path.unlink(missing_ok=True)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]


# --- staged outputs -----------------------------------------------------------------------

def config_hash(cfg: Any) -> str:
    text = cfg.model_dump_json() if hasattr(cfg, "model_dump_json") else json.dumps(cfg, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _entry(path: Path) -> dict[str, Any]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {"kind": "folder", "files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    return {"kind": "file", "bytes": path.stat().st_size}


def _move_aside(path: Path, old_dir: Path) -> None:
    if os.path.lexists(path):
        old_dir.mkdir(exist_ok=True)
        os.replace(path, old_dir / path.name)


def _swap(staging: Path, output_dir: Path, manifest: dict[str, Any]) -> None:
    """Move a committed staging folder's outputs into place; safe to repeat after a crash."""
    old_dir = staging / _OLD
    for name in manifest["outputs"]:
        new, final = staging / name, output_dir / name
        if os.path.lexists(new):
            if (final.is_dir() and not final.is_symlink()) or new.is_dir():
                _move_aside(final, old_dir)  # a folder cannot be replaced by one rename
            os.replace(new, final)
        elif name not in manifest["files"]:
            _move_aside(final, old_dir)  # an output of an earlier run that this run does not write
    fsync_dir(output_dir)
    write_text_durable(output_dir / MANIFEST, json.dumps(manifest, indent=2))
    shutil.rmtree(staging, ignore_errors=True)


def recover(output_dir: str | Path, log: Callable[[str], None] = print) -> None:
    """Finish committed swaps left by a killed run and delete uncommitted staging folders.
    Call it only while holding the lock."""
    root = Path(output_dir) / STAGING
    if not root.is_dir():
        return
    for staging in sorted(root.iterdir()):
        commit = staging / _COMMIT
        if commit.exists():
            try:
                manifest = json.loads(commit.read_text())
            except ValueError:  # cannot happen after a durable write; treat as uncommitted
                manifest = None
            if manifest is not None:
                log(f"[outputs] finishing the output swap of run {manifest['run_id']} that was interrupted")
                _swap(staging, Path(output_dir), manifest)
                continue
        log(f"[outputs] removing the unfinished outputs of an interrupted run ({staging})")
        shutil.rmtree(staging, ignore_errors=True)
    _remove_if_empty(root)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (another run's staging), or gone
        pass


class StagedOutputs:
    """Outputs of one run, written under a staging folder and swapped in by :meth:`commit`.

    ``outputs`` names every file or folder the command may write in ``output_dir``; those not
    written by this run are removed at the swap, so no output of an earlier run survives
    beside this run's (e.g. a plot from a run with ``plot: true``).
    """

    def __init__(self, output_dir: str | Path, command: str, outputs: list[str], cfg: Any = None,
                 run_id: str | None = None):
        self.output_dir = Path(output_dir)
        self.command = command
        self.outputs = list(outputs)
        self.run_id = run_id or new_run_id()
        self.config_hash = config_hash(cfg) if cfg is not None else None
        self.folder = self.output_dir / STAGING / self.run_id
        with disk_errors(self.folder, "no output was changed"):
            self.folder.mkdir(parents=True)

    def path(self, name: str) -> Path:
        """Where to write output ``name`` now; :meth:`final` is where it will be after the commit."""
        if name not in self.outputs:
            raise ValueError(f"{name!r} is not one of the declared outputs {self.outputs}")
        return self.folder / name

    def final(self, name: str) -> Path:
        return self.output_dir / name

    def commit(self, rows: dict[str, int] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """fsync, write the manifest (the commit point), swap every output in; returns the manifest."""
        rows = rows or {}
        written = [n for n in self.outputs if os.path.lexists(self.folder / n)]
        files = {n: {**_entry(self.folder / n), **({"rows": rows[n]} if n in rows else {})} for n in written}
        manifest = {"run_id": self.run_id, "command": self.command, "config_hash": self.config_hash,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
                    "outputs": self.outputs, "files": files, **(extra or {})}
        keep = f"the previous outputs in {self.output_dir} are unchanged"
        with disk_errors(self.folder, keep):
            fsync_tree(self.folder)
            write_text_durable(self.folder / _COMMIT, json.dumps(manifest, indent=2))
        _swap(self.folder, self.output_dir, manifest)
        return manifest

    def abort(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        _remove_if_empty(self.output_dir / STAGING)


@contextmanager
def output_lock(output_dir: str | Path, command: str, log: Callable[[str], None] = print) -> Iterator[LockInfo]:
    """Hold the lock on ``output_dir`` for the block, finishing or cleaning up earlier runs first."""
    lock = acquire_lock(output_dir, command)
    try:
        recover(output_dir, log)
        yield lock
    finally:
        release_lock(output_dir, lock)


@contextmanager
def staged_outputs(output_dir: str | Path, command: str, outputs: list[str], cfg: Any = None,
                   run_id: str | None = None) -> Iterator[StagedOutputs]:
    """A :class:`StagedOutputs` whose staging folder is removed if the block fails (or never commits)."""
    staged = StagedOutputs(output_dir, command, outputs, cfg, run_id)
    try:
        yield staged
    finally:
        staged.abort()


def verify_outputs(output_dir: str | Path) -> list[str]:
    """Differences between ``output_dir`` and its manifest ([] when they agree)."""
    folder = Path(output_dir)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return [f"{folder / MANIFEST}: unreadable ({e})"]
    problems = []
    for name, want in manifest["files"].items():
        path = folder / name
        if not path.exists():
            problems.append(f"{path}: missing")
            continue
        got = _entry(path)
        if {k: got[k] for k in got} != {k: want[k] for k in got}:
            problems.append(f"{path}: {got} != manifest {want}")
    for name in manifest["outputs"]:
        if name not in manifest["files"] and os.path.lexists(folder / name):
            problems.append(f"{folder / name}: present but not written by run {manifest['run_id']}")
    return problems
