"""Decontamination against evaluation sets: word n-gram overlap plus exact normalized match.

Two rules (``DecontamConfig.rule``):

- ``s1``: s1's own (data/decontaminate_util.py): lowercase whitespace words, any shared n-gram
  flags the row.
- ``distinctive`` (default): a pool row is contaminated by a benchmark when it shares at least
  ``min_matches`` *distinctive* word n-grams with that benchmark's problems, when its normalized
  text equals one of them (catches evaluation problems shorter than ``n`` words, which have no
  n-gram at all), or when it is a *copy* of one evaluation problem: it shares at least
  ``copy_fraction`` of that problem's own n-grams (those not in more than ``max_eval_df``
  evaluation problems, so a shared template alone makes no copy), whatever the pool holds. An
  n-gram is *common phrasing*,
  and does not count as distinctive, when it occurs in more than ``max_eval_df`` evaluation
  problems or in more than ``max_pool_df`` distinct pool questions that are not themselves
  copies ("express your answer as a decimal to the nearest ..."). Because copies neither need
  distinctive n-grams nor count towards the pool frequency, adding more copies of an evaluation
  problem to a pool can never unflag any of them.

Columns added: ``contam_benchmarks`` (comma-separated benchmark names, '' if clean),
``contam_ngrams`` (n-grams shared with the first named benchmark: distinctive ones under
``distinctive``, all under ``s1``), ``contam_exact`` (normalized text equals an evaluation
problem).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from s1ray.curate import text
from s1ray.config import StrictModel
from s1ray.io.readers import SourceConfig, read_source
from s1ray.curate.stage import Stage
from s1ray.records import question_id



class DecontamConfig(StrictModel):
    """N-gram decontamination against evaluation sets (s1 uses 8-grams).

    ``rule: s1`` is s1's exact rule (data/decontaminate_util.py, collect_data.py): lowercase,
    split on whitespace, and any ``n``-gram shared with an evaluation problem drops the row; no
    exemption, no exact match (the other knobs below are not used).

    ``rule: distinctive`` (default) closes two holes of plain n-gram overlap and ignores
    boilerplate: words are lowercase alphanumeric runs (punctuation and LaTeX markup do not hide
    a copy); evaluation problems shorter than ``n`` words are caught by an exact normalized
    match; n-grams that are common phrasing (found in more than ``max_eval_df`` evaluation
    problems or more than ``max_pool_df`` pool rows) do not flag a row on their own. A row that
    shares at least ``copy_fraction`` of one evaluation problem's n-grams is a copy of it and is
    flagged whatever the commonness of those n-grams, and copies never count towards
    ``max_pool_df``: so however many reworded copies of a problem a pool holds, each is caught,
    and the exemption never unflags them.
    """

    enabled: bool = True
    rule: Literal["distinctive", "s1"] = "distinctive"
    n: int = Field(8, ge=1)
    min_matches: int = Field(1, ge=1)  # distinctive n-grams a row must share with one benchmark
    max_eval_df: int = 2
    max_pool_df: int = 3
    copy_fraction: float = Field(0.5, gt=0, le=1)
    exact_match: bool = True

_BITMAP_MASK = (1 << 22) - 1

SCORE_COLUMNS = {
    "contam_benchmarks": "comma-separated evaluation sets this row collides with ('' = clean)",
    "contam_ngrams": "distinctive n-grams shared with the first colliding benchmark",
    "contam_exact": "normalized question equals an evaluation problem",
}


@dataclass
class EvalIndex:
    """Everything the per-batch step needs about the evaluation sets (small, broadcast)."""

    names: list[str]
    ngrams: np.ndarray  # sorted unique n-gram hashes
    bench_mask: np.ndarray  # per n-gram: bit b set when benchmark b has it
    eval_common: np.ndarray  # per n-gram: in more than max_eval_df evaluation problems
    exact_ids: dict[str, int]  # question_id -> benchmark bitmask
    n_problems: dict[str, int]
    n_short: dict[str, int]  # problems shorter than n words (only the exact match can catch them)
    # n-gram -> evaluation problems holding it (CSR: doc_ids[doc_offsets[g]:doc_offsets[g+1]])
    doc_offsets: np.ndarray | None = None
    doc_ids: np.ndarray | None = None
    doc_ngrams: np.ndarray | None = None  # per evaluation problem: its n-grams that are not common phrasing
    doc_bench: np.ndarray | None = None  # per evaluation problem: its benchmark index

    @property
    def bitmap(self) -> np.ndarray:
        if not hasattr(self, "_bitmap"):
            bm = np.zeros(_BITMAP_MASK + 1, bool)
            bm[(self.ngrams & np.uint64(_BITMAP_MASK)).astype(np.int64)] = True
            self._bitmap = bm
        return self._bitmap


def build_index(questions: dict[str, list[str]], cfg: DecontamConfig) -> EvalIndex:
    """Index evaluation problems ``{benchmark: [question, ...]}``."""
    names = list(questions)
    if len(names) > 63:
        raise ValueError("at most 63 evaluation sets are supported")
    hashes, docs, bench_of_doc, exact = [], [], [], {}
    n_short: dict[str, int] = {}
    doc_base = 0
    for b, name in enumerate(names):
        qs = questions[name]
        toks = _tokens(pa.array(qs, pa.string()), cfg)
        h, d = text.ngram_hashes(toks, cfg.n)
        hashes.append(h)
        docs.append(d + doc_base)
        bench_of_doc.append(np.full(len(qs), b))
        doc_base += len(qs)
        n_short[name] = int((toks.counts() < cfg.n).sum())
        for q in qs:
            exact[question_id(q)] = exact.get(question_id(q), 0) | (1 << b)
    h = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    d = np.concatenate(docs) if docs else np.zeros(0, np.int64)
    bod = np.concatenate(bench_of_doc) if bench_of_doc else np.zeros(0, np.int64)
    pairs = np.unique(np.stack([h, d.astype(np.uint64)], 1), axis=0) if len(h) else np.zeros((0, 2), np.uint64)
    uniq, inv, df = np.unique(pairs[:, 0], return_inverse=True, return_counts=True)
    mask = np.zeros(len(uniq), np.int64)
    np.bitwise_or.at(mask, inv, (np.int64(1) << bod[pairs[:, 1].astype(np.int64)]).astype(np.int64))
    offsets = np.r_[0, np.cumsum(df)].astype(np.int64)
    doc_ids = pairs[:, 1].astype(np.int64)  # pairs are sorted by n-gram, so this is the CSR body
    eval_common = df > cfg.max_eval_df
    own = doc_ids[np.repeat(~eval_common, df)]  # (problem) of each pair whose n-gram is not common
    return EvalIndex(names=names, ngrams=uniq, bench_mask=mask, eval_common=eval_common,
                     exact_ids=exact, n_problems={k: len(v) for k, v in questions.items()}, n_short=n_short,
                     doc_offsets=offsets, doc_ids=doc_ids, doc_ngrams=np.bincount(own, minlength=doc_base),
                     doc_bench=bod)


def _tokens(texts: pa.Array, cfg: DecontamConfig) -> text.Tokens:
    """s1 splits lowercase text on whitespace; ``distinctive`` uses alphanumeric word runs."""
    return text.Tokens(texts, whitespace=True) if cfg.rule == "s1" else text.Tokens(texts, words_only=True)


def load_eval_sets(sources: list[SourceConfig]) -> dict[str, list[str]]:
    """Read evaluation sets with the ordinary readers (files or hub ids); name = benchmark."""
    out: dict[str, list[str]] = {}
    for spec in sources:
        res = read_source(spec)
        out.setdefault(spec.name, []).extend(r["question"] for r in res.records)
    return out


def decontam_features(batch: pa.Table, index: EvalIndex, cfg: DecontamConfig) -> pa.Table:
    """Per batch: which evaluation n-grams each row contains, and exact-match bitmasks."""
    toks = _tokens(batch["question"].combine_chunks(), cfg)
    h, d = text.ngram_hashes(toks, cfg.n)
    # A bitmap of the evaluation n-grams' low bits discards almost every pool n-gram cheaply;
    # only the few candidates are looked up exactly.
    maybe = index.bitmap[(h & np.uint64(_BITMAP_MASK)).astype(np.int64)]
    h, d = h[maybe], d[maybe]
    pos = np.searchsorted(index.ngrams, h)
    pos_c = np.minimum(pos, max(len(index.ngrams) - 1, 0))
    hit = (pos < len(index.ngrams)) & (index.ngrams[pos_c] == h) if len(index.ngrams) else np.zeros(len(h), bool)
    rows, ngram_pos = d[hit], pos[hit]
    m = max(len(index.ngrams), 1)
    key = np.unique(rows.astype(np.int64) * m + ngram_pos)  # sorted by row, then n-gram
    uniq = np.stack([key // m, key % m], 1)
    counts = np.bincount(uniq[:, 0], minlength=batch.num_rows) if len(uniq) else np.zeros(batch.num_rows, np.int64)
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int32)
    matched = pa.ListArray.from_arrays(pa.array(offsets), pa.array(uniq[:, 1].astype(np.int64)))
    exact = np.zeros(batch.num_rows, np.int64)
    if cfg.exact_match and cfg.rule != "s1" and index.exact_ids:
        ids = batch["id"].combine_chunks()
        keys = list(index.exact_ids)
        where = pc.index_in(ids, value_set=pa.array(keys)).to_numpy(zero_copy_only=False)
        found = ~np.isnan(where.astype(float))
        vals = np.array([index.exact_ids[k] for k in keys], np.int64)
        exact[found] = vals[where[found].astype(np.int64)]
    # Only rows that match something go to the driver, with a 64-bit hash of their id (the pool
    # document frequency counts distinct questions), not the id string.
    some = np.flatnonzero((counts > 0) | (exact != 0))
    ids = np.asarray(batch["id"].to_numpy(zero_copy_only=False), object)
    return pa.table({"row_index": batch["row_index"].take(pa.array(some)),
                     "id_key": pa.array(pd.util.hash_array(ids[some]) if len(some) else np.zeros(0, np.uint64)),
                     "matched": matched.take(pa.array(some)), "exact_mask": pa.array(exact[some])})


def _copies(row_of: np.ndarray, flat: np.ndarray, index: EvalIndex, n_total: int, fraction: float) -> np.ndarray:
    """Per pool row, a benchmark bitmask: the row shares >= ``fraction`` of one problem's own n-grams.

    A problem's own n-grams are those not common to many evaluation problems: a templated sibling
    ("State the final answer to the following arithmetic problem: 4 - 1 =" next to "... 1 + 5 =")
    shares the template, not the problem, and is not a copy of it.
    """
    out = np.zeros(n_total, np.int64)
    own = ~index.eval_common[flat] if len(flat) else np.zeros(0, bool)
    row_of, flat = row_of[own], flat[own]
    if not len(flat) or index.doc_offsets is None:
        return out
    starts, lens = index.doc_offsets[flat], np.diff(index.doc_offsets)[flat]
    total = int(lens.sum())
    pos = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(starts, lens)
    docs = index.doc_ids[pos]
    rows = np.repeat(row_of, lens)
    n_docs = len(index.doc_ngrams)
    key, shared = np.unique(rows.astype(np.int64) * n_docs + docs, return_counts=True)
    r, d = key // n_docs, key % n_docs
    hit = (shared >= fraction * index.doc_ngrams[d]) & (index.doc_ngrams[d] > 0)
    np.bitwise_or.at(out, r[hit], np.int64(1) << index.doc_bench[d[hit]].astype(np.int64))
    return out


def find_contamination(feats: pa.Table, index: EvalIndex, cfg: DecontamConfig, n_total: int) -> dict:
    """The global step: per benchmark, rows with matching n-grams (after the common-phrase filter)."""
    ri = feats["row_index"].to_numpy()
    matched = feats["matched"].combine_chunks()
    lens = pc.list_value_length(matched).to_numpy(zero_copy_only=False)
    flat = matched.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    row_of = np.repeat(ri, lens)
    nb = len(index.names)
    copies = np.zeros(n_total, np.int64)
    pool_df = np.zeros(len(index.ngrams), np.int64)
    common = np.zeros(len(index.ngrams), bool)
    if cfg.rule == "distinctive":
        copies = _copies(row_of, flat, index, n_total, cfg.copy_fraction)
        # Pool document frequency of each matched n-gram, over distinct questions that are not
        # copies of an evaluation problem (so copies can never make their own n-grams "common").
        id_codes, _ = pd.factorize(feats["id_key"].to_numpy())
        id_of = np.repeat(id_codes, lens)
        counted = copies[row_of] == 0 if len(flat) else np.zeros(0, bool)
        if counted.any():
            m = int(id_of.max()) + 1
            k = np.unique(flat[counted] * m + id_of[counted])
            pool_df += np.bincount(k // m, minlength=len(pool_df))
        common = index.eval_common | (pool_df > cfg.max_pool_df)
    keep = ~common[flat] if len(flat) else np.zeros(0, bool)
    row_of, flat = row_of[keep], flat[keep]
    counts = np.zeros((n_total, nb), np.int32)
    for b in range(nb):
        has_b = (index.bench_mask[flat] >> b) & 1 == 1
        np.add.at(counts[:, b], row_of[has_b], 1)
    exact = np.zeros(n_total, np.int64)
    exact[ri] = feats["exact_mask"].to_numpy()
    bits = np.arange(nb)
    min_matches = 1 if cfg.rule == "s1" else cfg.min_matches
    flagged = (counts >= min_matches) | (((exact[:, None] >> bits) & 1) == 1) | (((copies[:, None] >> bits) & 1) == 1)
    names = np.array(index.names + [""], dtype=object)
    labels = np.full(n_total, "", dtype=object)
    first_count = np.zeros(n_total, np.int32)
    for r in np.flatnonzero(flagged.any(1)):
        hit = np.flatnonzero(flagged[r])
        labels[r] = ",".join(names[hit])
        first_count[r] = counts[r, hit[0]]
    n_common = {"eval": int(index.eval_common.sum()) if cfg.rule == "distinctive" else 0,
                "pool": int((pool_df > cfg.max_pool_df).sum()) if cfg.rule == "distinctive" else 0}
    return {"labels": labels, "ngrams": first_count, "exact": exact != 0, "n_common": n_common,
            "copies": copies != 0}


def attach_decontam(batch: pa.Table, labels: np.ndarray, ngrams: np.ndarray, exact: np.ndarray) -> pa.Table:
    """The global step's arrays cover row_index up to the last row that matched anything."""
    ri = batch["row_index"].to_numpy()
    seen = ri < len(labels)
    at = np.where(seen, ri, 0)
    pick = (lambda a, empty: np.where(seen, a[at], empty)) if len(labels) else (lambda a, empty: np.full(len(ri), empty))
    batch = batch.append_column("contam_benchmarks", pa.array(pick(labels, ""), pa.string()))
    batch = batch.append_column("contam_ngrams", pa.array(pick(ngrams, 0).astype(np.int32)))
    return batch.append_column("contam_exact", pa.array(pick(exact, False).astype(bool)))


def score_decontam(ds, cfg: Any, index: EvalIndex | None = None):
    """Ray Data stage: n-gram lookups in parallel, global common-phrase filter, attach columns."""
    from s1ray.curate.dedup import collect

    if index is None:
        index = build_index(load_eval_sets(cfg.eval_sets), cfg.decontam)
    ds = ds.materialize()
    feats = collect(ds.map_batches(decontam_features, fn_kwargs={"index": index, "cfg": cfg.decontam},
                                   batch_format="pyarrow", batch_size=cfg.batch_size))
    if not feats.num_rows:  # no row matched anything
        feats = pa.table({"row_index": pa.array([], pa.int64()), "id_key": pa.array([], pa.uint64()),
                          "matched": pa.array([], pa.list_(pa.int64())), "exact_mask": pa.array([], pa.int64())})
    n_total = int(feats["row_index"].to_numpy().max()) + 1 if feats.num_rows else 0
    found = find_contamination(feats, index, cfg.decontam, n_total)
    return ds.map_batches(attach_decontam, fn_kwargs={"labels": found["labels"], "ngrams": found["ngrams"],
                                                      "exact": found["exact"]},
                          batch_format="pyarrow", batch_size=cfg.batch_size)


def decontam_verdict(batch: pa.Table, cfg: DecontamConfig) -> list[tuple[str, np.ndarray]]:
    if "contam_benchmarks" not in batch.column_names:
        return [("decontam", np.full(batch.num_rows, "", dtype=object))]
    labels = batch["contam_benchmarks"].to_numpy(zero_copy_only=False)
    return [("decontam", np.array(["contaminated:" + s.split(",")[0] if s else "" for s in labels], dtype=object))]


STAGE = Stage("decontam", DecontamConfig, score_decontam, decontam_verdict, SCORE_COLUMNS, depends_on=("decontam", "eval_sets"))
