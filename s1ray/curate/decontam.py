"""Decontamination against evaluation sets: word n-gram overlap plus exact normalized match.

A pool row is contaminated by a benchmark when it shares at least ``min_matches``
*distinctive* word n-grams with that benchmark's problems, or when its normalized text equals
one of them. The exact match catches evaluation problems shorter than ``n`` words (which have
no n-gram at all). An n-gram is *common phrasing*, and never counts, when it occurs in more
than ``max_eval_df`` evaluation problems or in more than ``max_pool_df`` distinct pool
questions ("express your answer as a decimal to the nearest ...").

Columns added: ``contam_benchmarks`` (comma-separated benchmark names, '' if clean),
``contam_ngrams`` (distinctive n-grams shared with the first named benchmark),
``contam_exact`` (normalized text equals an evaluation problem).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from s1ray.curate import text
from s1ray.curate.config import CurateConfig, DecontamConfig
from s1ray.io.readers import SourceConfig, read_source
from s1ray.records import question_id

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
        toks = text.Tokens(pa.array(qs, pa.string()), words_only=True)
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
    return EvalIndex(names=names, ngrams=uniq, bench_mask=mask, eval_common=df > cfg.max_eval_df,
                     exact_ids=exact, n_problems={k: len(v) for k, v in questions.items()}, n_short=n_short)


def load_eval_sets(sources: list[SourceConfig]) -> dict[str, list[str]]:
    """Read evaluation sets with the ordinary readers (files or hub ids); name = benchmark."""
    out: dict[str, list[str]] = {}
    for spec in sources:
        res = read_source(spec)
        out.setdefault(spec.name, []).extend(r["question"] for r in res.records)
    return out


def decontam_features(batch: pa.Table, index: EvalIndex, cfg: DecontamConfig) -> pa.Table:
    """Per batch: which evaluation n-grams each row contains, and exact-match bitmasks."""
    toks = text.Tokens(batch["question"].combine_chunks(), words_only=True)
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
    if cfg.exact_match and index.exact_ids:
        ids = batch["id"].combine_chunks()
        keys = list(index.exact_ids)
        where = pc.index_in(ids, value_set=pa.array(keys)).to_numpy(zero_copy_only=False)
        found = ~np.isnan(where.astype(float))
        vals = np.array([index.exact_ids[k] for k in keys], np.int64)
        exact[found] = vals[where[found].astype(np.int64)]
    return pa.table({"row_index": batch["row_index"], "id": batch["id"], "matched": matched,
                     "exact_mask": pa.array(exact)})


def find_contamination(feats: pa.Table, index: EvalIndex, cfg: DecontamConfig, n_total: int) -> dict:
    """The global step: drop common n-grams, count distinctive matches per benchmark."""
    ri = feats["row_index"].to_numpy()
    matched = feats["matched"].combine_chunks()
    lens = pc.list_value_length(matched).to_numpy(zero_copy_only=False)
    flat = matched.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    row_of = np.repeat(ri, lens)
    _, id_codes = np.unique(np.asarray(feats["id"].to_numpy(zero_copy_only=False)), return_inverse=True)
    id_of = np.repeat(id_codes, lens)
    # Pool document frequency of each matched n-gram, over distinct questions.
    pool_df = np.zeros(len(index.ngrams), np.int64)
    if len(flat):
        k = np.unique(flat * (int(id_of.max()) + 1) + id_of)
        pool_df += np.bincount(k // (int(id_of.max()) + 1), minlength=len(pool_df))
    common = index.eval_common | (pool_df > cfg.max_pool_df)
    keep = ~common[flat] if len(flat) else np.zeros(0, bool)
    row_of, flat = row_of[keep], flat[keep]
    nb = len(index.names)
    counts = np.zeros((n_total, nb), np.int32)
    for b in range(nb):
        has_b = (index.bench_mask[flat] >> b) & 1 == 1
        np.add.at(counts[:, b], row_of[has_b], 1)
    exact = np.zeros(n_total, np.int64)
    exact[ri] = feats["exact_mask"].to_numpy()
    bits = np.arange(nb)
    flagged = (counts >= cfg.min_matches) | (((exact[:, None] >> bits) & 1) == 1)
    names = np.array(index.names + [""], dtype=object)
    labels = np.full(n_total, "", dtype=object)
    first_count = np.zeros(n_total, np.int32)
    for r in np.flatnonzero(flagged.any(1)):
        hit = np.flatnonzero(flagged[r])
        labels[r] = ",".join(names[hit])
        first_count[r] = counts[r, hit[0]]
    n_common = {"eval": int(index.eval_common.sum()), "pool": int((pool_df > cfg.max_pool_df).sum())}
    return {"labels": labels, "ngrams": first_count, "exact": exact != 0, "n_common": n_common}


def attach_decontam(batch: pa.Table, labels: np.ndarray, ngrams: np.ndarray, exact: np.ndarray) -> pa.Table:
    ri = batch["row_index"].to_numpy()
    batch = batch.append_column("contam_benchmarks", pa.array(labels[ri], pa.string()))
    batch = batch.append_column("contam_ngrams", pa.array(ngrams[ri]))
    return batch.append_column("contam_exact", pa.array(exact[ri]))


def score_decontam(ds, cfg: CurateConfig, index: EvalIndex | None = None):
    """Ray Data stage: n-gram lookups in parallel, global common-phrase filter, attach columns."""
    from s1ray.curate.dedup import collect

    if index is None:
        index = build_index(load_eval_sets(cfg.eval_sets), cfg.decontam)
    ds = ds.materialize()
    feats = collect(ds.map_batches(decontam_features, fn_kwargs={"index": index, "cfg": cfg.decontam},
                                   batch_format="pyarrow", batch_size=cfg.batch_size))
    n_total = int(feats["row_index"].to_numpy().max()) + 1 if feats.num_rows else 0
    found = find_contamination(feats, index, cfg.decontam, n_total)
    return ds.map_batches(attach_decontam, fn_kwargs={"labels": found["labels"], "ngrams": found["ngrams"],
                                                      "exact": found["exact"]},
                          batch_format="pyarrow", batch_size=cfg.batch_size)
