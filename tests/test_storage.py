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
    assert str(folder) in str(e.value) and "chmod -R o-w" in str(e.value)
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
