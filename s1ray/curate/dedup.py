"""Exact and math-aware near-duplicate detection across sources.

Per-row work (tokens, shingles, MinHash, one-edit keys, the math, options and answer keys)
runs in parallel over Ray Data batches; grouping rows by LSH bucket and one-edit key into
candidate pairs is a shuffle of Ray tasks (partitioned by bucket key); the rest of the global
part (grouping ids, confirming candidates, picking the kept copy) runs once on the driver on
compact per-row numpy arrays and the candidate pairs.

* Exact duplicates share the record ``id`` (hash of :func:`s1ray.records.normalize_text`:
  case, whitespace, LaTeX spacing are ignored; digits are kept) and, with ``choices_aware``,
  the same set of multiple-choice options.
* Near-duplicate candidates come from two places: LSH over ``bands`` x (``num_perm``/``bands``)
  MinHash rows on ``shingle_size``-token shingles (estimated Jaccard >= ``threshold``), and, for
  questions of 4..``short_tokens`` tokens, one-edit keys (:func:`s1ray.curate.text.edit_keys`):
  a short question with one word substituted, inserted or deleted shares a key with the original,
  where its shingle Jaccard is far below any useful threshold.
* Confirmation (:func:`confirm`) tells a rewording from a sibling exercise by the tokens that
  differ: with ``math_aware``, both questions must hold the same ordered numbers, formulas and
  key words, a key word counting as its concept (``largest``/``greatest`` are one concept,
  ``long``/``short``, ``min``/``max``, ``kinetic energy``/``momentum`` are not:
  :data:`s1ray.curate.text.KEY_CONCEPTS`); with ``choices_aware`` the same options; with
  ``answer_guard`` no two different reference answers (normalized; a choice letter stands for
  its option's text). The answer guard also holds across a group: members joined through a row
  without an answer are split by answer, so two rows with different answers never end in one
  group.
* The kept copy of every group is deterministic: the first row passing the quality rules,
  in read order (sources in config order, rows in file order).

Columns added: ``dup_kind`` ('' | 'exact' | 'near'), ``dup_of`` (row_index of the kept copy,
-1 for kept rows), ``dup_similarity`` (estimated Jaccard to the kept copy, 1.0 for exact).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from s1ray.curate import text
from s1ray.config import StrictModel
from s1ray.curate.quality import quality_reason
from s1ray.curate.stage import Stage



class DedupConfig(StrictModel):
    """Exact dedup on normalized text (and options), then near-dedup with a confirmation step.

    Candidates: MinHash LSH on ``shingle_size``-token shingles (words, numbers, single symbols,
    CJK characters) at estimated Jaccard >= ``threshold``, and for questions of at most
    ``short_tokens`` tokens one-edit keys (one word substituted, inserted or deleted). A
    candidate is merged only when the tokens that differ carry no content (``math_aware``: the
    same ordered numbers and formulas, the same key-word concepts), the options are the same
    (``choices_aware``) and the reference answers do not differ (``answer_guard``); see the
    module docstring. Measured (tests/benchmarks/bench_dedup_precision.py, README): 100% of
    one-word synonym swaps caught in every length bucket including under 12 words, every
    key-word flip, number change and other-options variant kept, and 0 merges of different
    reference answers on reasoning-gym families and the shared pool; ``key_words: basic,
    short_tokens: 0, answer_guard: false, choices_aware: false`` is the previous behaviour
    (88% of one-word swaps under 12 words, 61% of key-word flips kept).
    """

    enabled: bool = True
    near: bool = True
    shingle_size: int = 3
    num_perm: int = 64
    bands: int = 16  # rows per band = num_perm / bands
    threshold: float = 0.6
    math_aware: bool = True
    seed: int = 1
    # Key words of the math key: "concepts" (synonym groups, s1ray.curate.text.KEY_CONCEPTS) or the
    # first, smaller list ("basic"). Short questions (4..short_tokens tokens) are also paired when one
    # token was substituted, inserted or deleted (0 = off). answer_guard: two questions whose reference
    # answers both exist and differ are never merged. choices_aware: multiple-choice options are part
    # of the question (same stem, other options = another question). See s1ray/curate/dedup.py.
    key_words: Literal["concepts", "basic"] = "concepts"
    short_tokens: int = Field(24, ge=0)
    answer_guard: bool = True
    choices_aware: bool = True

SCORE_COLUMNS = {
    "dup_kind": "'' (kept copy or unique), 'exact' or 'near' duplicate",
    "dup_of": "row_index of the kept copy of this row's group, -1 if this row is kept",
    "dup_similarity": "estimated Jaccard similarity to the kept copy (1.0 exact, 0.0 kept)",
}

EDIT_MIN_TOKENS = 4  # one edit in a question of 3 tokens or fewer is a different question


def dedup_features(batch: pa.Table, cfg: Any) -> pa.Table:
    """Per-batch features for the global dedup step: signature, keys, one-edit keys, quality ok."""
    d = cfg.dedup
    toks = text.Tokens(batch["question"].combine_chunks())
    sh, doc = text.shingles(toks, d.shingle_size)
    sig = text.minhash(sh, doc, toks.n_docs, d.num_perm, d.seed)
    n_sh = np.bincount(doc, minlength=toks.n_docs)
    if cfg.quality.enabled and "q_words" in batch.column_names:
        ok = quality_reason(batch, cfg.quality) == ""
    else:
        ok = np.ones(batch.num_rows, bool)
    n = batch.num_rows
    has_choices = "choices" in batch.column_names
    choices = batch["choices"].combine_chunks() if has_choices else None
    ckey = text.choices_keys(choices) if has_choices and d.choices_aware else np.zeros(n, np.uint64)
    akey = (text.answer_keys(batch["answer"].combine_chunks(), choices) if "answer" in batch.column_names
            else np.zeros(n, np.uint64))
    if d.near and d.short_tokens:
        keys, kdoc = text.edit_keys(toks, EDIT_MIN_TOKENS, d.short_tokens)
        order = np.argsort(kdoc, kind="stable")
        keys, kdoc = keys[order], kdoc[order]
    else:
        keys, kdoc = np.zeros(0, np.uint64), np.zeros(0, np.int64)
    offsets = np.r_[0, np.cumsum(np.bincount(kdoc, minlength=n))].astype(np.int32)
    return pa.table({
        "row_index": batch["row_index"],
        "id": batch["id"],
        "quality_ok": pa.array(ok),
        "n_shingles": pa.array(n_sh.astype(np.int32)),
        "math_key": pa.array(text.math_key(toks, d.key_words)),
        "choices_key": pa.array(ckey),
        "answer_key": pa.array(akey),
        "edit_keys": pa.ListArray.from_arrays(pa.array(offsets), pa.array(keys, pa.uint64())),
        "sig": pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), d.num_perm),
        # Compact per-row keys for the driver (the signatures stay in the object store, see score_dedup).
        "id_key": pa.array(pd.util.hash_array(np.asarray(batch["id"].to_numpy(zero_copy_only=False), object))),
        "band_keys": pa.FixedSizeListArray.from_arrays(
            pa.array(np.stack([k for k, _ in _band_pairs(sig, d.bands)], 1).ravel()
                     if d.bands and n else np.zeros(0, np.uint64), pa.uint64()), max(d.bands, 1)),
    })


def _band_pairs(sig: np.ndarray, bands: int):
    """LSH bucket keys, one band at a time: yields (keys, rows) with the band mixed into the key.

    Rows sharing a key are candidates; buckets come from hashing (pandas.factorize, O(n)) in
    :func:`_key_pairs`, not sorting.
    """
    n, p = sig.shape
    r = p // bands
    rows = np.arange(n)
    for b in range(bands):
        block = sig[:, b * r : (b + 1) * r].astype(np.uint64)
        key = np.full(n, np.uint64(b + 1))
        with np.errstate(over="ignore"):
            for c in range(r):
                key = text.mix64(key * np.uint64(0x100000001B3) + block[:, c])
        yield key, rows


def _key_pairs(keys: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """Pairs (head, member) of rows sharing a key, each linked to the key's earliest row.

    Star links are enough because connected components join the groups afterwards.
    """
    if not len(keys):
        return np.zeros((0, 2), np.int64)
    codes, uniques = pd.factorize(keys)
    if len(uniques) == len(keys):
        return np.zeros((0, 2), np.int64)
    first = np.full(len(uniques), n, np.int64)
    np.minimum.at(first, codes, rows)
    head = first[codes]
    m = head != rows
    return np.stack([head[m], rows[m]], 1)


def _pair_keys(pairs: np.ndarray, n: int) -> np.ndarray:
    """Sorted unique keys lo * n + hi of unordered pairs (1-D unique: much faster than axis=0)."""
    if not len(pairs):
        return np.zeros(0, np.int64)
    return np.unique(np.minimum(pairs[:, 0], pairs[:, 1]) * n + np.maximum(pairs[:, 0], pairs[:, 1]))


def confirm(a: np.ndarray, b: np.ndarray, sim: np.ndarray, by_edit: np.ndarray, f: dict[str, np.ndarray],
            cfg: DedupConfig) -> np.ndarray:
    """Which candidate pairs (a[i], b[i]) are rewordings of one question, not sibling exercises.

    A pair is close enough when its estimated Jaccard reaches ``threshold`` or it is one edit
    apart (short questions). It is a rewording when the tokens that differ carry no content:
    same ordered numbers, formulas and key-word concepts (``math_aware``), same options
    (``choices_aware``), and not two different reference answers (``answer_guard``).
    """
    good = (sim >= cfg.threshold) | by_edit
    if cfg.math_aware:
        good &= f["math_key"][a] == f["math_key"][b]
    if cfg.choices_aware:
        good &= f["choices_key"][a] == f["choices_key"][b]
    if cfg.answer_guard:
        ka, kb = f["answer_key"][a], f["answer_key"][b]
        good &= (ka == 0) | (kb == 0) | (ka == kb)
    return good


def _band_columns(feats: pa.Table, rows: np.ndarray, cfg: DedupConfig):
    """LSH bucket keys of ``rows`` (positions in ``feats``), one band at a time: from the tasks'
    ``band_keys`` column when present, else computed from the signatures."""
    if "band_keys" in feats.column_names:
        keys = feats["band_keys"].combine_chunks().flatten().to_numpy().reshape(-1, max(cfg.bands, 1))
        for b in range(cfg.bands):
            yield keys[rows, b]
        return
    sig = feats["sig"].combine_chunks().flatten().to_numpy().reshape(-1, cfg.num_perm)
    for keys, _ in _band_pairs(sig[rows], cfg.bands):
        yield keys


def candidate_rows(feats: pa.Table, kind: np.ndarray, cfg: DedupConfig) -> tuple[np.ndarray, ...]:
    """(group key, answer key, row_index, from_edit) for every (row, LSH band) and (row, one-edit
    key) of ``feats`` that can make a candidate pair; rows already exact duplicates (``kind``,
    indexed by row_index, != 0) take no part.

    The group key is the bucket key with the math key and options mixed in, so a bucket is split
    by them first (the equality tests of :func:`confirm`) and a sibling exercise that happens to be
    a bucket's first row never hides a rewording pair behind it. Rows sharing a group key pair up
    in :func:`candidate_keys`; groups never span two group keys, so the rows can be partitioned by
    group key and paired in parallel (:func:`_shuffled_candidates`).
    """
    ri = feats["row_index"].to_numpy()
    names = feats.column_names
    none = np.zeros(len(ri), np.uint64)
    mkey, ckey, akey = (feats[k].to_numpy() if k in names else none for k in ("math_key", "choices_key", "answer_key"))
    live = kind[ri] == 0
    keys, rows, edit = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)], [np.zeros(0, bool)]
    if cfg.near and len(ri):
        lsh = np.flatnonzero(live & (feats["n_shingles"].to_numpy() > 0))
        for bkeys in _band_columns(feats, lsh, cfg):
            keys.append(bkeys)
            rows.append(lsh)
            edit.append(np.zeros(len(lsh), bool))
        if cfg.short_tokens and "edit_keys" in names:
            ek = feats["edit_keys"].combine_chunks()
            er = np.repeat(np.arange(len(ri)), pc.list_value_length(ek).to_numpy(zero_copy_only=False))
            m = live[er]
            keys.append(ek.flatten().to_numpy(zero_copy_only=False)[m])
            rows.append(er[m])
            edit.append(np.ones(int(m.sum()), bool))
    g, r = np.concatenate(keys).astype(np.uint64), np.concatenate(rows)
    with np.errstate(over="ignore"):
        if cfg.math_aware:
            g = text.mix64(g ^ mkey[r])
        if cfg.choices_aware:
            g = text.mix64(g + ckey[r])
    return g, akey[r], ri[r], np.concatenate(edit)


def _group_pairs(g: np.ndarray, ak: np.ndarray, rows: np.ndarray, n: int, cfg: DedupConfig) -> np.ndarray:
    """Pairs of rows sharing a group key. With the answer guard, rows with the same answer are
    linked, and rows without an answer are linked to the group's first answered row."""
    if not cfg.answer_guard:
        return _key_pairs(g, rows, n)
    same_answer = _key_pairs(text.mix64(g ^ ak), rows, n)
    codes, uniques = pd.factorize(g)
    first_answered = np.full(len(uniques), n, np.int64)
    answered = ak != 0
    np.minimum.at(first_answered, codes[answered], rows[answered])
    lone = ~answered & (first_answered[codes] < n)
    to_answered = np.stack([first_answered[codes[lone]], rows[lone]], 1)
    return np.concatenate([same_answer, to_answered])


def candidate_keys(g: np.ndarray, ak: np.ndarray, rows: np.ndarray, edit: np.ndarray, n: int,
                   cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """Sorted pair keys lo * n + hi of candidate pairs from LSH buckets and from one-edit keys
    (the rows of :func:`candidate_rows`; one-edit pairs skip the Jaccard threshold)."""
    return (_pair_keys(_group_pairs(g[~edit], ak[~edit], rows[~edit], n, cfg), n),
            _pair_keys(_group_pairs(g[edit], ak[edit], rows[edit], n, cfg), n))


def _partition_candidates(kind: np.ndarray, cfg: DedupConfig, parts: int, *blocks: pa.Table):
    """Map side of the candidate shuffle: the candidate rows of some feature blocks, split by
    group key into ``parts`` partitions."""
    got = [candidate_rows(b, kind, cfg) for b in blocks if b.num_rows]
    cols = [np.concatenate(c) for c in zip(*got)] if got else [np.zeros(0, np.uint64)] * 4
    part = (cols[0] % np.uint64(parts)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(parts + 1))
    out = [tuple(c[order[bounds[j]:bounds[j + 1]]] for c in cols) for j in range(parts)]
    return out if parts > 1 else out[0]


def _pairs_of_partition(n: int, cfg: DedupConfig, *pieces) -> tuple[np.ndarray, np.ndarray]:
    """Reduce side: every row of some group keys, so their pairs are complete."""
    g, ak, rows, edit = (np.concatenate(c) for c in zip(*pieces))
    return candidate_keys(g, ak, rows, edit.astype(bool), n, cfg)


def _shuffled_candidates(feats_ds, cfg: DedupConfig, rows_per_map: int = 50_000,
                         rows_per_partition: int = 100_000) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    """candidates(kind by row_index, n) -> candidate pair keys (LSH, one-edit) over row_index,
    computed by Ray tasks from the materialized features: map tasks split the candidate rows by
    group key, one reduce task per partition pairs them. The driver receives only pair keys."""

    def candidates(kind: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        import ray

        refs = feats_ds.to_arrow_refs()
        rows = feats_ds.count()  # from block metadata: the dataset is materialized
        parts = int(np.clip(np.ceil(rows / rows_per_partition), 1, 64))
        per_map = max(1, round(rows_per_map * len(refs) / max(rows, 1)))  # blocks per map task
        chunks = [refs[i:i + per_map] for i in range(0, len(refs), per_map)]
        kind_ref = ray.put(kind)
        mapper = ray.remote(num_cpus=1, num_returns=parts)(_partition_candidates)
        mapped = [mapper.remote(kind_ref, cfg, parts, *chunk) for chunk in chunks]
        if parts == 1:
            mapped = [[m] for m in mapped]
        reducer = ray.remote(num_cpus=1)(_pairs_of_partition)
        out = ray.get([reducer.remote(n, cfg, *[m[j] for m in mapped]) for j in range(parts)]) if mapped else []
        empty = np.zeros(0, np.int64)
        return (np.unique(np.concatenate([empty] + [o[0] for o in out])),
                np.unique(np.concatenate([empty] + [o[1] for o in out])))

    return candidates


class _Signatures:
    """MinHash signatures of the rows a similarity is asked for, and only those: from the
    ``sig`` column when ``feats`` holds it, else through ``fetch(row_index values)``."""

    def __init__(self, feats: pa.Table, order: np.ndarray, row_index: np.ndarray, num_perm: int,
                 fetch: Callable[[np.ndarray], np.ndarray] | None):
        self.feats, self.order, self.row_index, self.num_perm, self.fetch = feats, order, row_index, num_perm, fetch
        self.pos = np.zeros(0, np.int64)  # sorted positions loaded
        self.sig = np.zeros((0, num_perm), np.uint32)

    def _load(self, pos: np.ndarray) -> None:
        new = np.setdiff1d(pos, self.pos)
        if not len(new):
            return
        if "sig" in self.feats.column_names:
            got = self.feats["sig"].take(pa.array(self.order[new])).combine_chunks()
            got = got.flatten().to_numpy().reshape(-1, self.num_perm)
        elif self.fetch is not None:
            got = self.fetch(self.row_index[new])
        else:
            raise ValueError("dedup features hold no signatures and no way to fetch them")
        allpos = np.concatenate([self.pos, new])
        o = np.argsort(allpos, kind="stable")
        self.pos, self.sig = allpos[o], np.concatenate([self.sig, got.astype(np.uint32)])[o]

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Estimated Jaccard of pairs of positions (share of equal MinHash values)."""
        if not len(a):
            return np.zeros(0, np.float64)
        self._load(np.unique(np.concatenate([a, b])))
        ia, ib = np.searchsorted(self.pos, a), np.searchsorted(self.pos, b)
        return (self.sig[ia] == self.sig[ib]).mean(1)


def find_duplicates(feats: pa.Table, cfg: DedupConfig,
                    signatures: Callable[[np.ndarray], np.ndarray] | None = None,
                    candidates: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None,
                    ) -> dict[str, np.ndarray]:
    """The global step: arrays indexed by row_index (dup_kind code, dup_of, dup_similarity).

    Locally, ``feats`` holds every feature column. On Ray (:func:`score_dedup`) it holds only
    the compact per-row keys (:data:`_DRIVER_COLUMNS`): ``candidates(kind by row_index, n)``
    returns the candidate pair keys, computed by Ray tasks, and ``signatures(row_index values)``
    the MinHash rows of just the candidate pairs."""
    row_index = feats["row_index"].to_numpy()
    n_total = int(row_index.max()) + 1 if len(row_index) else 0
    order = np.argsort(row_index)
    row_index = row_index[order]
    names = feats.column_names
    zeros = np.zeros(len(order), np.uint64)
    f = {k: (feats[k].to_numpy()[order] if k in names else zeros) for k in ("math_key", "choices_key", "answer_key")}
    if "id_key" in names:  # 64-bit hash of the id, computed in the tasks: no strings on the driver
        ids, _ = pd.factorize(feats["id_key"].to_numpy()[order])
    else:
        ids, _ = pd.factorize(np.asarray(feats["id"].to_numpy(zero_copy_only=False))[order])
    if cfg.choices_aware:  # the same stem with other options is another question
        ids, _ = pd.factorize(ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ f["choices_key"])
    ok = feats["quality_ok"].to_numpy(zero_copy_only=False)[order]
    n = len(row_index)
    # Rank: quality-passing rows first, then read order.
    rank = np.lexsort((row_index, ~ok))
    rank_of = np.empty(n, np.int64)
    rank_of[rank] = np.arange(n)

    kind = np.zeros(n, np.int8)  # 0 kept/unique, 1 exact, 2 near
    dup_of = np.full(n, -1, np.int64)
    sim = np.zeros(n, np.float32)

    # Exact: group by id (and options), keep the best-ranked member.
    by_id = np.lexsort((rank_of, ids))
    first = np.r_[True, ids[by_id][1:] != ids[by_id][:-1]]
    head = by_id[np.maximum.accumulate(np.where(first, np.arange(n), 0))]
    exact = ~first
    kind[by_id[exact]] = 1
    dup_of[by_id[exact]] = row_index[head[exact]]
    sim[by_id[exact]] = 1.0

    if cfg.near and n:
        kind_by_row = np.zeros(n_total, np.int8)
        kind_by_row[row_index] = kind
        if candidates is None:
            lsh, edit = candidate_keys(*candidate_rows(feats, kind_by_row, cfg), n_total, cfg)
        else:
            lsh, edit = candidates(kind_by_row, n_total)

        def positions(keys: np.ndarray) -> np.ndarray:  # row_index pair keys -> position pair keys
            return np.searchsorted(row_index, keys // n_total) * n + np.searchsorted(row_index, keys % n_total)

        lsh, edit = positions(lsh), positions(edit)
        key = np.union1d(lsh, edit)
        if len(key):
            sigs = _Signatures(feats, order, row_index, cfg.num_perm, signatures)
            by_edit = np.isin(key, edit, assume_unique=True)
            a, b = key // n, key % n
            s = sigs.similarity(a, b)
            good = confirm(a, b, s, by_edit, f, cfg)
            a, b = a[good], b[good]
            if len(a):
                g = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
                _, comp = connected_components(g, directed=False)
                member = np.zeros(n, bool)
                member[a] = member[b] = True
                if cfg.answer_guard:
                    comp = _split_by_answer(comp, member, f["answer_key"], rank_of)
                best = np.full(comp.max() + 1, n, np.int64)
                np.minimum.at(best, comp, rank_of)
                keeper = rank[best[comp]]  # position of each row's group keeper
                near = member & (keeper != np.arange(n))
                kind[near] = 2
                dup_of[near] = row_index[keeper[near]]
                sim[near] = sigs.similarity(np.flatnonzero(near), keeper[near])

    out_kind = np.zeros(n_total, np.int8)
    out_of = np.full(n_total, -1, np.int64)
    out_sim = np.zeros(n_total, np.float32)
    out_kind[row_index], out_of[row_index], out_sim[row_index] = kind, dup_of, sim
    return {"kind": out_kind, "dup_of": out_of, "sim": out_sim}


def _split_by_answer(comp: np.ndarray, member: np.ndarray, akey: np.ndarray, rank_of: np.ndarray) -> np.ndarray:
    """Split groups so that no group holds two different reference answers.

    Rows with an answer form one group per (group, answer); rows without one join the group of
    their group's best-ranked answered row (or stay together when none has an answer).
    """
    n = len(comp)
    idx = np.flatnonzero(member)
    c, k = comp[idx], akey[idx]
    # best-ranked answered row per component -> its answer
    answered = idx[k != 0]
    lead = np.zeros(comp.max() + 1, np.uint64)
    if len(answered):
        o = answered[np.lexsort((rank_of[answered], comp[answered]))]
        firsts = np.r_[True, comp[o][1:] != comp[o][:-1]]
        lead[comp[o][firsts]] = akey[o][firsts]
    k = np.where(k == 0, lead[c], k)
    codes, _ = pd.factorize(text.mix64(c.astype(np.uint64)) ^ k)
    out = np.arange(n, dtype=np.int64) + n  # non-members: singleton groups, disjoint from members
    out[idx] = codes
    _, out = np.unique(out, return_inverse=True)
    return out


_KINDS = np.array(["", "exact", "near"], dtype=object)


def attach_dedup(batch: pa.Table, kind: np.ndarray, dup_of: np.ndarray, sim: np.ndarray) -> pa.Table:
    ri = batch["row_index"].to_numpy()
    batch = batch.append_column("dup_kind", pa.array(_KINDS[kind[ri]], pa.string()))
    batch = batch.append_column("dup_of", pa.array(dup_of[ri]))
    return batch.append_column("dup_similarity", pa.array(sim[ri]))


def _select(table: pa.Table, columns: list[str]) -> pa.Table:
    return table.select(columns)


def collect(ds, columns: list[str] | None = None) -> pa.Table:
    """Bring a (small-columned) dataset to the driver as one Arrow table; with ``columns``, only
    those (selected in Ray tasks, so the other columns never reach the driver). Plain Ray tasks
    over the blocks: cheaper for the driver to schedule than another Ray Data execution."""
    import ray

    refs = ds.to_arrow_refs()
    if columns is not None:
        select = ray.remote(num_cpus=1)(_select)
        refs = [select.remote(r, columns) for r in refs]
    tables = [t for t in ray.get(refs) if t.num_rows]
    return pa.concat_tables(tables) if tables else pa.table({})


def _rows_with_sig(batch: pa.Table, rows: np.ndarray) -> pa.Table:
    keep = np.isin(batch["row_index"].to_numpy(), rows)
    return batch.select(["row_index", "sig"]).filter(pa.array(keep))


def _fetch_signatures(feats_ds, num_perm: int) -> Callable[[np.ndarray], np.ndarray]:
    """signatures(row_index values) -> their MinHash rows, in that order, from the materialized
    features: one Ray task per block returns only the rows asked for."""

    def fetch(rows: np.ndarray) -> np.ndarray:
        import ray

        task, wanted = ray.remote(num_cpus=1)(_rows_with_sig), ray.put(np.asarray(rows))
        tables = [t for t in ray.get([task.remote(r, wanted) for r in feats_ds.to_arrow_refs()]) if t.num_rows]
        if not tables:
            return np.zeros((0, num_perm), np.uint32)
        got = pa.concat_tables(tables)
        ri = got["row_index"].to_numpy()
        if got.num_rows != len(np.unique(rows)):
            raise RuntimeError(f"dedup: asked for {len(np.unique(rows))} signatures, got {got.num_rows}")
        sig = got["sig"].combine_chunks().flatten().to_numpy().reshape(-1, num_perm)
        o = np.argsort(ri)
        return sig[o][np.searchsorted(ri[o], rows)]

    return fetch


# Per-row arrays the global step needs on the driver (no signatures, id strings or bucket keys).
_DRIVER_COLUMNS = ["row_index", "id_key", "quality_ok", "math_key", "choices_key", "answer_key"]


def score_dedup(ds, cfg: Any):
    """Ray Data stage: features in parallel, one global grouping step, then attach the columns."""
    ds = ds.materialize()
    feats_ds = ds.map_batches(dedup_features, fn_kwargs={"cfg": cfg}, batch_format="pyarrow",
                              batch_size=cfg.batch_size).materialize()
    feats = collect(feats_ds, _DRIVER_COLUMNS)
    found = find_duplicates(feats, cfg.dedup, _fetch_signatures(feats_ds, cfg.dedup.num_perm),
                            _shuffled_candidates(feats_ds, cfg.dedup))
    del feats, feats_ds
    return ds.map_batches(attach_dedup, fn_kwargs={"kind": found["kind"], "dup_of": found["dup_of"],
                                                   "sim": found["sim"]},
                          batch_format="pyarrow", batch_size=cfg.batch_size)


def dedup_verdict(batch: pa.Table, cfg: DedupConfig) -> list[tuple[str, np.ndarray]]:
    reason = np.full(batch.num_rows, "", dtype=object)
    if "dup_kind" in batch.column_names:
        kind = np.asarray(batch["dup_kind"].to_numpy(zero_copy_only=False), dtype=object)
        reason[kind == "exact"] = "exact_duplicate"
        reason[kind == "near"] = "near_duplicate"
    return [("dedup", reason)]


# Prefers quality-passing rows as the kept copy, so the quality thresholds change its scores.
STAGE = Stage("dedup", DedupConfig, score_dedup, dedup_verdict, SCORE_COLUMNS, depends_on=("quality", "dedup"))
