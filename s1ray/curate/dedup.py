"""Exact and math-aware near-duplicate detection across sources.

Per-row work (tokens, shingles, MinHash, the math key) runs in parallel over Ray Data
batches; the global part (grouping ids, LSH banding, verifying candidates, picking the kept
copy) runs once on compact numpy arrays, which is fast even for 59K+ rows.

* Exact duplicates share the record ``id`` (hash of :func:`s1ray.records.normalize_text`:
  case, whitespace, LaTeX spacing are ignored; digits are kept).
* Near duplicates: LSH over ``bands`` x (``num_perm``/``bands``) MinHash rows on
  ``shingle_size``-token shingles proposes candidates; a candidate is confirmed when the
  estimated Jaccard similarity is >= ``threshold`` and, with ``math_aware``, the two
  questions have the same ordered numbers/formulas (:func:`s1ray.curate.text.math_key`).
* The kept copy of every group is deterministic: the first row passing the quality rules,
  in read order (sources in config order, rows in file order).

Columns added: ``dup_kind`` ('' | 'exact' | 'near'), ``dup_of`` (row_index of the kept copy,
-1 for kept rows), ``dup_similarity`` (estimated Jaccard to the kept copy, 1.0 for exact).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from s1ray.curate import text
from s1ray.curate.config import CurateConfig, DedupConfig
from s1ray.curate.quality import quality_reason

SCORE_COLUMNS = {
    "dup_kind": "'' (kept copy or unique), 'exact' or 'near' duplicate",
    "dup_of": "row_index of the kept copy of this row's group, -1 if this row is kept",
    "dup_similarity": "estimated Jaccard similarity to the kept copy (1.0 exact, 0.0 kept)",
}


def dedup_features(batch: pa.Table, cfg: CurateConfig) -> pa.Table:
    """Per-batch features for the global dedup step: signature, math key, quality ok."""
    d = cfg.dedup
    toks = text.Tokens(batch["question"].combine_chunks())
    sh, doc = text.shingles(toks, d.shingle_size)
    sig = text.minhash(sh, doc, toks.n_docs, d.num_perm, d.seed)
    n_sh = np.bincount(doc, minlength=toks.n_docs)
    if cfg.quality.enabled and "q_words" in batch.column_names:
        ok = quality_reason(batch, cfg.quality) == ""
    else:
        ok = np.ones(batch.num_rows, bool)
    return pa.table({
        "row_index": batch["row_index"],
        "id": batch["id"],
        "quality_ok": pa.array(ok),
        "n_shingles": pa.array(n_sh.astype(np.int32)),
        "math_key": pa.array(text.math_key(toks)),
        "sig": pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), d.num_perm),
    })


def _band_pairs(sig: np.ndarray, bands: int) -> np.ndarray:
    """Candidate pairs (head, member): rows sharing a band's bucket, linked to its first row.

    Buckets come from hashing (pandas.factorize, O(n)), not sorting; star links per band are
    enough because connected components join the groups afterwards.
    """
    n, p = sig.shape
    r = p // bands
    idx = np.arange(n)
    pairs = []
    for b in range(bands):
        block = sig[:, b * r : (b + 1) * r].astype(np.uint64)
        key = np.zeros(n, np.uint64)
        with np.errstate(over="ignore"):
            for c in range(r):
                key = text.mix64(key * np.uint64(0x100000001B3) + block[:, c])
        codes, uniques = pd.factorize(key)
        if len(uniques) == n:
            continue
        first = np.full(len(uniques), n, np.int64)
        first[codes[::-1]] = idx[::-1]  # first occurrence of each bucket
        head = first[codes]
        m = head != idx
        pairs.append(np.stack([head[m], idx[m]], 1))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    allp = np.concatenate(pairs)
    key = np.unique(allp[:, 0] * n + allp[:, 1])  # 1-D unique: much faster than axis=0
    return np.stack([key // n, key % n], 1)


def find_duplicates(feats: pa.Table, cfg: DedupConfig) -> dict[str, np.ndarray]:
    """The global step: arrays indexed by row_index (dup_kind code, dup_of, dup_similarity)."""
    row_index = feats["row_index"].to_numpy()
    n_total = int(row_index.max()) + 1 if len(row_index) else 0
    order = np.argsort(row_index)
    row_index = row_index[order]
    ids, _ = pd.factorize(np.asarray(feats["id"].to_numpy(zero_copy_only=False))[order])
    ok = feats["quality_ok"].to_numpy(zero_copy_only=False)[order]
    n = len(row_index)
    # Rank: quality-passing rows first, then read order.
    rank = np.lexsort((row_index, ~ok))
    rank_of = np.empty(n, np.int64)
    rank_of[rank] = np.arange(n)

    kind = np.zeros(n, np.int8)  # 0 kept/unique, 1 exact, 2 near
    dup_of = np.full(n, -1, np.int64)
    sim = np.zeros(n, np.float32)

    # Exact: group by id, keep the best-ranked member.
    by_id = np.lexsort((rank_of, ids))
    first = np.r_[True, ids[by_id][1:] != ids[by_id][:-1]]
    head = by_id[np.maximum.accumulate(np.where(first, np.arange(n), 0))]
    exact = ~first
    kind[by_id[exact]] = 1
    dup_of[by_id[exact]] = row_index[head[exact]]
    sim[by_id[exact]] = 1.0

    if cfg.near and n:
        sig_all = feats["sig"].combine_chunks().flatten().to_numpy().reshape(-1, cfg.num_perm)[order]
        mkey = feats["math_key"].to_numpy()[order]
        n_sh = feats["n_shingles"].to_numpy()[order]
        cand = np.flatnonzero((kind == 0) & (n_sh > 0))
        pairs = _band_pairs(sig_all[cand], cfg.bands)
        if len(pairs):
            a, b = cand[pairs[:, 0]], cand[pairs[:, 1]]
            s = (sig_all[a] == sig_all[b]).mean(1)
            good = s >= cfg.threshold
            if cfg.math_aware:
                good &= mkey[a] == mkey[b]
            a, b = a[good], b[good]
            if len(a):
                g = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
                _, comp = connected_components(g, directed=False)
                best = np.full(comp.max() + 1, n, np.int64)
                np.minimum.at(best, comp, rank_of)
                keeper = rank[best[comp]]  # position of each row's group keeper
                member = np.zeros(n, bool)
                member[a] = member[b] = True
                near = member & (keeper != np.arange(n))
                kind[near] = 2
                dup_of[near] = row_index[keeper[near]]
                sim[near] = (sig_all[near] == sig_all[keeper[near]]).mean(1)

    out_kind = np.zeros(n_total, np.int8)
    out_of = np.full(n_total, -1, np.int64)
    out_sim = np.zeros(n_total, np.float32)
    out_kind[row_index], out_of[row_index], out_sim[row_index] = kind, dup_of, sim
    return {"kind": out_kind, "dup_of": out_of, "sim": out_sim}


_KINDS = np.array(["", "exact", "near"], dtype=object)


def attach_dedup(batch: pa.Table, kind: np.ndarray, dup_of: np.ndarray, sim: np.ndarray) -> pa.Table:
    ri = batch["row_index"].to_numpy()
    batch = batch.append_column("dup_kind", pa.array(_KINDS[kind[ri]], pa.string()))
    batch = batch.append_column("dup_of", pa.array(dup_of[ri]))
    return batch.append_column("dup_similarity", pa.array(sim[ri]))


def collect(ds) -> pa.Table:
    """Bring a (small-columned) dataset to the driver as one Arrow table."""
    import ray

    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    return pa.concat_tables(tables) if tables else pa.table({})


def score_dedup(ds, cfg: CurateConfig):
    """Ray Data stage: features in parallel, one global grouping step, then attach the columns."""
    ds = ds.materialize()
    feats = collect(ds.map_batches(dedup_features, fn_kwargs={"cfg": cfg}, batch_format="pyarrow",
                                   batch_size=cfg.batch_size))
    found = find_duplicates(feats, cfg.dedup)
    return ds.map_batches(attach_dedup, fn_kwargs={"kind": found["kind"], "dup_of": found["dup_of"],
                                                   "sim": found["sim"]},
                          batch_format="pyarrow", batch_size=cfg.batch_size)
