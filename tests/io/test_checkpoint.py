"""BlockCheckpoint: atomic parts, resume keys, unreadable parts redone, config fingerprints."""

from __future__ import annotations

import pyarrow as pa
import pytest

from s1ray.io.checkpoint import BlockCheckpoint, config_key, jsonable


def test_parquet_parts_round_trip_and_keys(tmp_path):
    store = BlockCheckpoint(tmp_path / "parts", ("row_index",), "parquet")
    assert store.load() == ([], set())  # no folder yet
    a = pa.table({"row_index": pa.array([0, 1], pa.int64()), "score": pa.array([None, 0.5], pa.float32())})
    b = pa.table({"row_index": pa.array([5], pa.int64()), "score": pa.array([1.5], pa.float32())})
    assert store.save(a).name.endswith(".parquet")
    assert store.save(a.slice(0, 0)) is None  # empty blocks leave no file
    store.save(b)
    blocks, keys = BlockCheckpoint(tmp_path / "parts", ("row_index",), "parquet").load()
    assert keys == {(0,), (1,), (5,)}
    assert pa.concat_tables(blocks).equals(pa.concat_tables([a, b]))  # types and nulls kept
    assert not [p for p in (tmp_path / "parts").iterdir() if p.name.endswith(".tmp")]


def test_jsonl_parts_duplicate_keys_kept_once(tmp_path):
    store = BlockCheckpoint(tmp_path, ("bench", "id"), "jsonl")
    store.save([{"bench": "x", "id": 1, "v": [1, 2]}, {"bench": "x", "id": 2, "v": None}])
    store.save([{"bench": "x", "id": 2, "v": "again"}, {"bench": "y", "id": 2, "v": 3}])
    blocks, keys = store.load()
    assert keys == {("x", 1), ("x", 2), ("y", 2)}
    rows = [r for b in blocks for r in b]
    assert [r["v"] for r in rows] == [[1, 2], None, 3]  # the first saved copy wins


def test_unreadable_or_unfinished_parts_are_redone(tmp_path):
    """A torn or foreign file never counts as done: its rows run again (with a warning)."""
    warnings: list[str] = []
    store = BlockCheckpoint(tmp_path, ("row_index",), "parquet", warn=warnings.append)
    good = store.save(pa.table({"row_index": [1, 2]}))
    bad = tmp_path / "part-00000000000000000001-1-000001.parquet"
    bad.write_bytes(good.read_bytes()[:40])  # truncated Parquet
    (tmp_path / f".{good.name}.tmp").write_bytes(b"half")  # a write cut short by SIGKILL
    emptied = store.save(pa.table({"row_index": [9]}))
    emptied.write_bytes(b"")  # a zero-length file (e.g. a disk that filled up)
    blocks, keys = store.load()
    assert keys == {(1,), (2,)}
    assert len(warnings) == 2 and str(bad) in warnings[0] and "redone" in warnings[0]

    jwarn: list[str] = []
    jstore = BlockCheckpoint(tmp_path / "j", ("id",), "jsonl", warn=jwarn.append)
    jstore.save([{"id": 1}])
    p = jstore.save([{"id": 2}])
    p.write_text('{"id": 2}\n{"id": 3')  # a torn last line: the whole part is redone
    (tmp_path / "j" / "part-99999999999999999999-1-000009.jsonl").write_text('{"no_id": 1}\n')
    assert jstore.load()[1] == {(1,)}
    assert len(jwarn) == 2 and "line 2: not JSON" in jwarn[0] and "no key field(s) ['id']" in jwarn[1]


def test_save_refuses_blocks_without_keys(tmp_path):
    store = BlockCheckpoint(tmp_path, ("row_index",), "parquet")
    with pytest.raises(KeyError, match="row_index"):
        store.save(pa.table({"x": [1]}))
    with pytest.raises(ValueError, match="format"):
        BlockCheckpoint(tmp_path, ("k",), "csv")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_config_key_and_jsonable():
    import numpy as np

    assert config_key({"a": 1, "b": [1, 2]}) == config_key({"b": [1, 2], "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})
    assert jsonable({"n": np.int64(3), "t": (1, 2), "f": 0.1}) == {"n": 3, "t": [1, 2], "f": 0.1}
