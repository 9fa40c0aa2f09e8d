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
