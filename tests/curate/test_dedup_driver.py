"""The dedup global step on compact per-row arrays: the driver gets keys, not MinHash signatures,
id strings or bucket keys; candidate pairs come from a shuffle of Ray tasks and signatures are
fetched only for candidate pairs, with the same result as the all-local step."""

import numpy as np
import pyarrow as pa

from s1ray.curate.config import CurateConfig
from s1ray.curate.dedup import (_DRIVER_COLUMNS, _shuffled_candidates, candidate_keys, candidate_rows, dedup_features,
                                find_duplicates, score_dedup)
from s1ray.records import make_record, to_table

TOPICS = ["apples", "pears", "coins", "marbles", "stamps", "shells", "cards", "books", "ropes", "tiles"]


def _pool() -> pa.Table:
    qs = []
    for i, t in enumerate(TOPICS * 3):
        q = f"A shop sells {t} in boxes of {i + 4}; how many {t} are there in {2 * i + 3} full boxes of {t}?"
        qs.append(q)
        if i % 3 == 0:
            qs.append(q.replace("A shop sells", "A store sells"))  # a rewording: near duplicate
        if i % 4 == 0:
            qs.append(q.upper())  # exact duplicate after normalization
    t = to_table([make_record(source="p", origin=str(i), question=q, answer=None) for i, q in enumerate(qs)])
    return t.append_column("row_index", pa.array(np.arange(t.num_rows), pa.int64()))


def test_compact_features_give_the_same_groups_and_fetch_only_candidates():
    cfg = CurateConfig(sources=[])
    table = _pool()
    feats = dedup_features(table, cfg)
    full = find_duplicates(feats, cfg.dedup)
    assert (full["kind"] == 2).sum() >= 5 and (full["kind"] == 1).sum() >= 5

    sig = feats["sig"].combine_chunks().flatten().to_numpy().reshape(-1, cfg.dedup.num_perm)
    asked = []

    def fetch(rows):
        asked.extend(rows.tolist())
        return sig[rows]  # row_index == position here

    shuffled = []

    def candidates(kind, n):  # what the tasks compute from the full features
        shuffled.append(n)
        return candidate_keys(*candidate_rows(feats, kind, cfg.dedup), n, cfg.dedup)

    compact = feats.select(_DRIVER_COLUMNS)
    assert not {"sig", "id", "band_keys", "edit_keys"} & set(compact.column_names)
    got = find_duplicates(compact, cfg.dedup, fetch, candidates)
    assert shuffled == [table.num_rows]
    for k in ("kind", "dup_of", "sim"):
        np.testing.assert_array_equal(got[k], full[k])
    assert 0 < len(set(asked)) < table.num_rows and len(asked) == len(set(asked))  # each row fetched once
    assert set(np.flatnonzero(full["kind"] == 2)) <= set(asked)


def test_score_dedup_on_ray_equals_the_local_step(ray_local):
    cfg = CurateConfig(sources=[], batch_size=16)
    table = _pool()
    full = find_duplicates(dedup_features(table, cfg), cfg.dedup)
    out = ray_local.data.from_arrow([table.slice(i, 16) for i in range(0, table.num_rows, 16)])
    res = pa.concat_tables(ray_local.get(score_dedup(out, cfg).to_arrow_refs())).sort_by("row_index")
    kinds = np.array(["", "exact", "near"], dtype=object)[full["kind"]]
    assert res["dup_kind"].to_pylist() == kinds.tolist()
    assert res["dup_of"].to_pylist() == full["dup_of"].tolist()


def test_candidate_shuffle_on_ray_equals_the_local_pairs(ray_local):
    """Several map tasks and partitions (rows_per_map/partition far below the pool) give exactly the
    pairs of the local step, for LSH buckets and one-edit keys alike."""
    cfg = CurateConfig(sources=[], batch_size=8)
    table = _pool()
    feats = dedup_features(table, cfg)
    kind = find_duplicates(feats, cfg.dedup)["kind"]
    kind[kind == 2] = 0  # near duplicates are candidates; exact ones are not
    want = candidate_keys(*candidate_rows(feats, kind, cfg.dedup), table.num_rows, cfg.dedup)
    assert len(want[0]) >= 5 and (kind == 1).sum() >= 5
    ds = ray_local.data.from_arrow([table.slice(i, 8) for i in range(0, table.num_rows, 8)])
    feats_ds = ds.map_batches(dedup_features, fn_kwargs={"cfg": cfg}, batch_format="pyarrow").materialize()
    got = _shuffled_candidates(feats_ds, cfg.dedup, rows_per_map=16, rows_per_partition=10)(kind, table.num_rows)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)
