"""Outputs as one unit, one writer at a time: the lock (live, dead, reused-pid, other-host and
half-written holders), the staged swap, a SIGKILL while writing or swapping, a full disk."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from s1ray.io import outputs
from s1ray.io.outputs import (LOCK_NAME, MANIFEST, STAGING, OutputError, OutputsBusyError, acquire_lock,
                              output_lock, release_lock, staged_outputs, verify_outputs)
from s1ray.io.writers import write_jsonl

REPO = Path(__file__).resolve().parents[2]
NAMES = ["rows.jsonl", "pool", "report.json", "plot.png"]


def _python(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that takes the lock and keeps it until its stdin closes (or it is killed)."""
    p = _python(f"""
        import sys
        from s1ray.io.outputs import acquire_lock
        lock = acquire_lock({str(folder)!r}, "curate")
        print(lock.run_id, flush=True)
        sys.stdin.read()
    """)
    return p


def _write_run(staged, tag: str, plot: bool = True) -> None:
    write_jsonl([{"run": tag, "i": i} for i in range(3 if tag == "one" else 5)], staged.path("rows.jsonl"))
    pool = staged.path("pool")
    pool.mkdir()
    (pool / "part-0.txt").write_text(tag * 10)
    staged.path("report.json").write_text(json.dumps({"run": tag}))
    if plot:
        staged.path("plot.png").write_bytes(b"png" + tag.encode())


def test_a_second_writer_fails_at_once_naming_the_holder_and_a_killed_holder_is_replaced(tmp_path):
    holder = _hold_lock(tmp_path)
    run_id = holder.stdout.readline().strip()
    try:
        with pytest.raises(OutputsBusyError) as e:
            acquire_lock(tmp_path, "curate")
        msg = str(e.value)
        assert str(tmp_path) in msg and run_id in msg and f"pid {holder.pid}" in msg
        assert socket.gethostname() in msg and "curate run" in msg
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind
        holder.wait()
    assert (tmp_path / LOCK_NAME).exists()
    lock = acquire_lock(tmp_path, "curate")  # its pid is dead on this host: the stale lock is broken
    assert json.loads((tmp_path / LOCK_NAME).read_text())["run_id"] == lock.run_id
    release_lock(tmp_path, lock)
    assert not (tmp_path / LOCK_NAME).exists() and not (tmp_path / (LOCK_NAME + ".break")).exists()


def test_a_lock_from_another_host_is_never_broken(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "node-7", "pid": 1, "pid_start": None, "run_id": "r1",
                                                  "command": "select", "started": "2026-01-01T00:00:00"}))
    with pytest.raises(OutputsBusyError, match=f"delete {tmp_path / LOCK_NAME} by hand") as e:
        acquire_lock(tmp_path, "select")
    assert "host node-7" in str(e.value) and "select run r1" in str(e.value)


@pytest.mark.skipif(outputs._pid_start(os.getpid()) is None, reason="needs /proc to tell a reused pid")
def test_a_reused_pid_does_not_keep_a_lock(tmp_path):
    """The holder's pid is alive but is another process (it started at another time): stale."""
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                  "pid_start": "1", "run_id": "old", "command": "curate",
                                                  "started": "2026-01-01T00:00:00"}))
    lock = acquire_lock(tmp_path, "curate")
    assert lock.run_id != "old"


def test_a_half_written_lock_is_busy_until_it_is_old(tmp_path):
    (tmp_path / LOCK_NAME).write_text("")
    with pytest.raises(OutputsBusyError, match="still writing the lock file"):
        acquire_lock(tmp_path, "curate")
    os.utime(tmp_path / LOCK_NAME, (1, 1))  # its writer died long ago
    acquire_lock(tmp_path, "curate")


def test_commit_swaps_every_output_in_and_removes_what_the_run_did_not_write(tmp_path):
    with output_lock(tmp_path, "test"):
        with staged_outputs(tmp_path, "test", NAMES, {"v": 1}) as staged:
            _write_run(staged, "one")
            assert not (tmp_path / "rows.jsonl").exists()  # nothing visible before the commit
            first = staged.commit(rows={"rows.jsonl": 3})
    assert verify_outputs(tmp_path) == [] and first["files"]["rows.jsonl"]["rows"] == 3
    assert first["files"]["pool"] == {"kind": "folder", "files": 1, "bytes": 30}
    with output_lock(tmp_path, "test"):
        with staged_outputs(tmp_path, "test", NAMES, {"v": 2}) as staged:
            _write_run(staged, "two", plot=False)
            second = staged.commit(rows={"rows.jsonl": 5})
    assert verify_outputs(tmp_path) == []
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["run_id"] == second["run_id"] != first["run_id"]
    assert manifest["config_hash"] != first["config_hash"]
    assert not (tmp_path / "plot.png").exists()  # run one's plot does not stay beside run two's outputs
    assert (tmp_path / "pool" / "part-0.txt").read_text() == "two" * 10
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 5
    assert not (tmp_path / STAGING).exists() and not (tmp_path / LOCK_NAME).exists()


def test_a_failed_run_leaves_no_staging_and_the_old_outputs(tmp_path):
    with staged_outputs(tmp_path, "test", NAMES) as staged:
        _write_run(staged, "one")
        staged.commit()
    with pytest.raises(RuntimeError, match="boom"):
        with staged_outputs(tmp_path, "test", NAMES) as staged:
            _write_run(staged, "two")
            raise RuntimeError("boom")
    assert verify_outputs(tmp_path) == [] and not (tmp_path / STAGING).exists()
    assert json.loads((tmp_path / "report.json").read_text()) == {"run": "one"}


KILLER = """
    import os, signal, sys
    sys.argv = ["x", {out!r}, {point!r}]
    from s1ray.io import outputs
    from s1ray.io.outputs import output_lock, staged_outputs
    sys.path.insert(0, {tests!r})
    from test_outputs import NAMES, _write_run

    out, point = sys.argv[1], sys.argv[2]
    with output_lock(out, "test"):
        with staged_outputs(out, "test", NAMES) as staged:
            _write_run(staged, "one")
            staged.commit()
        with staged_outputs(out, "test", NAMES) as staged:
            _write_run(staged, "two")
            if point == "writing":
                os.kill(os.getpid(), signal.SIGKILL)
            real, calls = os.replace, []

            def replace(src, dst):  # SIGKILL after the first output is swapped in
                calls.append(dst)
                if len(calls) == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(src, dst)

            os.replace = replace
            staged.commit()
"""


@pytest.mark.parametrize("point", ["writing", "swapping"])
def test_sigkill_mid_write_leaves_one_runs_outputs_whole(tmp_path, point):
    out = tmp_path / "out"
    p = _python(KILLER.format(out=str(out), point=point, tests=str(Path(__file__).parent)))
    _, err = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL, err
    assert (out / LOCK_NAME).exists() and (out / STAGING).exists()  # what the killed run left behind
    if point == "writing":  # killed before the commit point: the previous outputs, untouched
        assert verify_outputs(out) == []
        assert json.loads((out / "report.json").read_text()) == {"run": "one"}
    else:  # killed during the swap: mixed until the next run finishes the committed swap
        assert verify_outputs(out) != []
    with output_lock(out, "next", log=lambda m: None):  # breaks the dead run's lock, recovers
        pass
    assert verify_outputs(out) == [] and not (out / STAGING).exists()
    want = "one" if point == "writing" else "two"
    assert json.loads((out / "report.json").read_text()) == {"run": want}
    assert (out / "pool" / "part-0.txt").read_text() == want * 10
    assert {json.loads(x)["run"] for x in open(out / "rows.jsonl")} == {want}


def test_disk_full_names_the_path_and_leaves_old_outputs_and_no_temp_files(tmp_path, monkeypatch):
    with staged_outputs(tmp_path, "test", NAMES) as staged:
        _write_run(staged, "one")
        staged.commit()

    def full(fd):  # NFS and quota'd filesystems report ENOSPC at fsync/close
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError) as e:
        with staged_outputs(tmp_path, "test", NAMES) as staged:
            monkeypatch.setattr(os, "fsync", full)
            write_jsonl([{"i": i} for i in range(10)], staged.path("rows.jsonl"))
    monkeypatch.undo()
    msg = str(e.value)
    assert "no space left on device" in msg and "rows.jsonl" in msg and "free space" in msg
    assert "Traceback" not in msg
    assert verify_outputs(tmp_path) == [] and not (tmp_path / STAGING).exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_a_write_task_reports_a_full_disk_as_an_error_row(tmp_path, monkeypatch):
    """In a Ray task a raised error would print a traceback: the task returns it as data."""
    import pyarrow.parquet as pq

    from s1ray.io import writers

    def full(table, where, **kw):
        Path(where).write_bytes(b"PAR1 half")
        raise OSError(errno.ENOSPC, "[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    batch = pa.table({"row_index": [0, 1], "keep": [True, False]})
    got = writers._write_block(batch, str(tmp_path), None, [])
    assert got.column_names == ["error"]
    assert "no space left on device" in got["error"][0].as_py() and str(tmp_path) in got["error"][0].as_py()
    assert list(tmp_path.iterdir()) == []  # the temp part is gone


def test_a_truncated_cache_part_is_found(tmp_path):
    import pyarrow.parquet as pq

    from s1ray.curate.pipeline import _mark_done, cache_problem

    done = tmp_path / "quality-abc"
    (done / "data").mkdir(parents=True)
    for i in range(2):
        pq.write_table(pa.table({"row_index": list(range(i * 10, i * 10 + 10))}),
                       done / "data" / f"part-{i:012d}.parquet")
    _mark_done(done, "abc", ["data"])
    assert cache_problem(done, ["data"]) is None
    part = done / "data" / f"part-{1:012d}.parquet"
    part.write_bytes(part.read_bytes()[:-20])
    assert "part-000000000001.parquet has" in cache_problem(done, ["data"])
    (done / "_SUCCESS").write_text("abc")  # a marker of an older version: the footer check still finds it
    assert "not a readable Parquet file" in cache_problem(done, ["data"])
