"""s1ray.storage.check_owned: checkpoints / Tune state are loaded only from local storage this
run owns; a folder another user could have written is refused, naming the path and the fix."""

from __future__ import annotations

import os

import pytest

from s1ray.storage import UnsafeStorageError, check_owned


def checkpoint(root):
    folder = root / "run" / "checkpoint_000003"
    (folder / "global_step3").mkdir(parents=True)
    (folder / "global_step3" / "mp_rank_00_model_states.pt").write_bytes(b"pickle")
    (folder / "latest").write_text("global_step3")
    return folder


def test_own_folder_passes(tmp_path):
    folder = checkpoint(tmp_path)
    check_owned(folder)
    check_owned(folder / "latest")                 # a single file
    check_owned(tmp_path / "not-written-yet")      # nothing to load yet
    check_owned("s3://bucket/s1ray/runs/x")        # remote: the cloud account's permissions apply


def test_world_writable_folder_is_refused(tmp_path):
    folder = checkpoint(tmp_path)
    folder.chmod(0o777)
    with pytest.raises(UnsafeStorageError, match=r"world-writable \(mode 0777\)") as e:
        check_owned(folder)
    assert str(folder) in str(e.value) and "chmod -R go-w" in str(e.value)
    folder.chmod(0o755)
    check_owned(folder)


def test_world_writable_file_inside_is_refused(tmp_path):
    folder = checkpoint(tmp_path)
    planted = folder / "global_step3" / "mp_rank_00_model_states.pt"
    planted.chmod(0o666)
    with pytest.raises(UnsafeStorageError) as e:
        check_owned(folder, what="Tune state")
    assert str(planted) in str(e.value) and "Tune state" in str(e.value)


def test_world_writable_parent_without_sticky_bit_is_refused(tmp_path):
    shared = tmp_path / "shared"
    folder = checkpoint(shared)
    shared.chmod(0o777)  # like a mount created with chmod 777: anyone can swap `run/` away
    try:
        with pytest.raises(UnsafeStorageError, match="parent folder .*shared is world-writable"):
            check_owned(folder)
        shared.chmod(0o1777)  # sticky (like /tmp): only the owner may rename or delete its entries
        check_owned(folder)
    finally:
        shared.chmod(0o755)


def test_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    folder = checkpoint(tmp_path)
    me = os.geteuid()
    if me == 0:  # as root: give the folder to someone else for real
        os.chown(folder, 12345, 12345)
        expected = "owned by uid 12345"
    else:        # as a user: this process pretends to be another user
        monkeypatch.setattr(os, "geteuid", lambda: me + 4242)
        expected = f"owned by uid {me}"
    with pytest.raises(UnsafeStorageError, match=expected):
        check_owned(folder)


def test_link_to_a_writable_file_outside_is_refused(tmp_path):
    folder = checkpoint(tmp_path / "mine")
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes(b"pickle")
    outside.chmod(0o666)
    (folder / "extra.pt").symlink_to(outside)
    with pytest.raises(UnsafeStorageError, match="elsewhere.pt"):
        check_owned(folder)
    outside.chmod(0o644)
    check_owned(folder)


# --- the load sites: a resumed training run and a restored sweep -------------------------------

def test_training_refuses_to_resume_from_a_world_writable_run_folder(tmp_path, monkeypatch):
    """build_trainer checks <storage_path>/<run_name> (Ray Train resumes from it) before any work."""
    import s1ray.cluster
    import s1ray.train.trainer as trainer
    from s1ray.train.config import TrainConfig

    monkeypatch.setattr(s1ray.cluster, "init_ray", lambda *a, **k: None)  # no cluster needed to get there
    monkeypatch.setattr(trainer, "_check_storage", lambda cfg: None)
    monkeypatch.setattr(trainer, "prepare_data", lambda cfg: (_ for _ in ()).throw(AssertionError("loaded data")))
    cfg = TrainConfig.model_validate({"data": {"name": "d", "path": str(tmp_path / "d.jsonl")}, "model": "tiny:tiny",
                                      "global_batch_size": 1, "storage_path": str(tmp_path / "runs"), "run_name": "r1"})
    run = checkpoint(tmp_path / "runs" / "r1")
    run.chmod(0o777)
    with pytest.raises(UnsafeStorageError, match="Ray Train run .*world-writable"):
        trainer.build_trainer(cfg)
    run.chmod(0o755)
    with pytest.raises(AssertionError, match="loaded data"):  # safe: it goes on to the data
        trainer.build_trainer(cfg)


def test_sweep_refuses_to_restore_world_writable_tune_state(tmp_path):
    import pandas as pd

    from s1ray.sweep.config import SweepConfig
    from s1ray.sweep.driver import build_tuner, sweep_dir

    cfg = SweepConfig.model_validate({
        "pool": str(tmp_path / "pool"), "name": "s", "storage_path": str(tmp_path / "sweeps"),
        "space": {"sizes": [2], "criteria": ["random"], "seeds": [0]}, "train": {"model": "tiny:tiny"},
        "evaluate": {"benchmarks": [{"name": "jsonl", "path": "b.jsonl"}], "budgets": [4]}})
    state = sweep_dir(cfg)
    state.mkdir(parents=True)
    (state / "experiment_state.json").write_text("{}")
    (state / "experiment_state.json").chmod(0o666)
    with pytest.raises(UnsafeStorageError, match="Tune state .*experiment_state.json"):
        build_tuner(cfg, pd.DataFrame(), 1)


# --- the holes: group-writable storage, foreign parents, file:// URIs, links on the way ----------

def _give_group_away(path, monkeypatch):
    """``path`` group-writable by a group other users are in (as root: a real chgrp)."""
    import s1ray.storage as storage

    path.chmod(0o775 if path.is_dir() else 0o664)
    if os.geteuid() == 0:
        os.chown(path, -1, 54321)  # no such group: nobody can prove it is private
    else:
        monkeypatch.setattr(storage, "_private_group", lambda gid, uid: False)


def test_group_writable_folder_or_file_is_refused(tmp_path, monkeypatch):
    folder = checkpoint(tmp_path)
    _give_group_away(folder, monkeypatch)
    with pytest.raises(UnsafeStorageError, match=r"group-writable \(mode 0775"):
        check_owned(folder)
    folder.chmod(0o755)
    check_owned(folder)
    planted = folder / "latest"
    _give_group_away(planted, monkeypatch)
    with pytest.raises(UnsafeStorageError, match=r"latest\) is group-writable"):
        check_owned(folder)


def test_group_writable_with_own_private_group_passes(tmp_path, monkeypatch):
    """umask 002 systems: every user has a group of their own; its write bit lets no one else in."""
    import s1ray.storage as storage

    folder = checkpoint(tmp_path)
    folder.chmod(0o775)
    monkeypatch.setattr(storage, "_private_group", lambda gid, uid: gid == folder.stat().st_gid)
    check_owned(folder)


def test_group_writable_parent_without_sticky_bit_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    folder = checkpoint(shared)
    _give_group_away(shared, monkeypatch)
    with pytest.raises(UnsafeStorageError, match="parent folder .*shared is group-writable"):
        check_owned(folder)
    shared.chmod(0o1775)  # sticky: group members may add entries, not swap ours
    check_owned(folder)


def test_parent_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    """Another user's folder above ours: its owner can rename our tree away and plant another."""
    import pathlib

    foreign = tmp_path / "bob"
    folder = checkpoint(foreign)
    if os.geteuid() == 0:
        os.chown(foreign, 12345, -1)
    else:
        real_stat = pathlib.Path.stat

        def stat(self, *a, **k):
            st = real_stat(self, *a, **k)
            if self == foreign:
                return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, 12345, *st[5:]))
            return st
        monkeypatch.setattr(pathlib.Path, "stat", stat)
    with pytest.raises(UnsafeStorageError, match="parent folder .*bob is owned by uid 12345"):
        check_owned(folder)


def test_file_uri_is_checked_like_a_path(tmp_path):
    folder = checkpoint(tmp_path)
    folder.chmod(0o777)
    for uri in (f"file://{folder}", f"file://localhost{folder}", f"FILE://{folder}"):
        with pytest.raises(UnsafeStorageError, match="world-writable"):
            check_owned(uri)
    folder.chmod(0o755)
    check_owned(f"file://{folder}")
    with pytest.raises(UnsafeStorageError, match="must name this machine"):
        check_owned(f"file://otherhost{folder}")
    check_owned("gs://bucket/runs/x")  # remote: not a local path


def test_link_through_a_writable_folder_is_refused(tmp_path):
    """The path as given passes through a world-writable folder holding a link: swappable."""
    real = checkpoint(tmp_path / "mine")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "run").symlink_to(real.parent)
    shared.chmod(0o777)
    try:
        with pytest.raises(UnsafeStorageError, match="parent folder .*shared is world-writable"):
            check_owned(shared / "run" / real.name)
        check_owned(real)  # the same checkpoint reached through folders nobody else can write
    finally:
        shared.chmod(0o755)


# --- the other load sites: curate cache, a stage's saved parts, evaluation parts ------------------

def test_saved_parts_are_checked_before_they_are_read(tmp_path):
    import pyarrow as pa

    from s1ray.io.checkpoint import BlockCheckpoint

    store = BlockCheckpoint(tmp_path / "parts", ("row_index",), "parquet")
    store.save(pa.table({"row_index": [0, 1], "x": ["a", "b"]}))
    assert store.load()[1] == {(0,), (1,)}
    part = store.part_files()[0]
    part.chmod(0o666)  # anyone could have planted rows that end up in training
    with pytest.raises(UnsafeStorageError, match="saved parts .*world-writable"):
        store.load()


def test_evaluation_parts_are_checked(tmp_path):
    from s1ray.evaluate.config import EvaluateConfig
    from s1ray.evaluate.runner import parts_dir, run_tasks_ray

    cfg = EvaluateConfig.model_validate({"output_dir": str(tmp_path), "generation": {"model": "tiny:tiny"},
                                         "benchmarks": [{"name": "jsonl", "path": "b.jsonl"}], "budgets": [4]})
    tasks = [{"benchmark": "b", "id": "1", "method": "budget", "budget": 4}]
    folder = parts_dir(cfg, tasks)
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    with pytest.raises(UnsafeStorageError, match=r"saved parts .*parts-.*world-writable"):
        run_tasks_ray(cfg, tasks, resume=True)


def test_curate_cache_is_checked_before_reuse(tmp_path):
    """A cached stage output (marked done) in a folder others can write is refused, not reused."""
    from s1ray.curate.config import CurateConfig
    from s1ray.curate.pipeline import _cached_read

    cfg = CurateConfig.model_validate({"sources": [{"name": "q", "path": str(tmp_path / "q.jsonl")}],
                                       "output_dir": str(tmp_path / "out")})
    (tmp_path / "q.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    cache = tmp_path / "out" / "cache"
    from s1ray.curate import pipeline

    key = pipeline._key("read", pipeline.CACHE_VERSION, pipeline.READ_VERSION,
                        [(s.model_dump(mode="json"), pipeline.fingerprint(s)) for s in cfg.sources])
    done = cache / f"read-{key}"
    done.mkdir(parents=True)
    (done / "_SUCCESS").write_text(key)
    (done / "counts.json").write_text('{"n_input": 1, "n_records": 1}')
    (done / "counts.json").chmod(0o666)
    with pytest.raises(UnsafeStorageError, match=r"curate cache .*counts.json\) is world-writable"):
        _cached_read(cfg, cache, print)


def test_no_path_is_not_the_working_directory(tmp_path, monkeypatch):
    """An empty path means "none given": Path("") is ".", so checking it would check whatever folder the
    process runs in (a Tune trial's working dir under Ray's 0777 /tmp/ray) and refuse a run that
    loads nothing."""
    from s1ray.storage import UnsafeStorageError, check_owned

    unsafe = tmp_path / "shared"
    unsafe.mkdir()
    unsafe.chmod(0o777)
    monkeypatch.chdir(unsafe)
    check_owned("", "resume_from checkpoint")  # nothing given: nothing checked
    with pytest.raises(UnsafeStorageError):
        check_owned(".", "resume_from checkpoint")
