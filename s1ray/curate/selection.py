"""Select a training subset from the scored pool: what built s1K, the paper's Algorithm 1, ablations.

``s1`` is what built s1K (data/filter.ipynb cells 14-21): the forced inclusions, then until 70%
of the size (700 of 1,000) a domain drawn uniformly, after that a domain drawn from the domain
distribution of the pool's AIME and GPQA questions (GPQA counts scaled so GPQA weighs half of
AIME); within the domain a question with weight 2^-rank (rank 0 = longest trace), removed from
its domain; an emptied domain leaves both distributions. The domain lists hold every pool
question, forced ones included, as in s1: drawing a forced question again selects nothing new.
``algorithm1`` is the paper's Algorithm 1 as written: uniform domain draws throughout, forced
questions left out of the draws.

Pure and fast (no model calls, vectorised set-up, one cheap Python step per draw) so a sweep
can call :func:`select_subset` thousands of times. The same ``seed`` always gives the same
subset. ``s1ray select`` (:func:`run_select`) reads a scored pool and writes the subset in
the s1K schema plus a report.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from s1ray.config import StrictModel, dump_config

Criterion = Literal["s1", "algorithm1", "random", "longest", "diverse", "difficulty", "full"]
CRITERIA: tuple[str, ...] = ("s1", "algorithm1", "random", "longest", "diverse", "difficulty", "full")
UNKNOWN_DOMAIN = "unknown"


class SelectionError(ValueError):
    """A pool or request selection cannot work with; the message names the column or value."""


class SelectionParams(StrictModel):
    """Knobs of the criteria; defaults follow the s1 paper."""

    forced_source_patterns: list[str] = ["aime", "gpqa"]  # regexes on source_type (case-insensitive)
    math_source_patterns: list[str] = ["openaimath", r"^math(?:$|[/_\-])", "hendrycks", "competition_math"]
    math_min_tokens: int = 5600  # correct MATH questions with longer traces are forced in
    require_correct: bool = True  # forced inclusions need a teacher attempt graded correct
    forced: bool = True  # s1: include the forced set first
    length_column: str = "thinking_tokens"
    domain_column: str = "domain"  # null values fall back to `domain_pred`, then "unknown"
    failures_column: str = "solver_failures"
    # criterion s1 only: uniform domain draws while fewer than this fraction of `size` is selected
    # (s1: 700 of 1,000), then draws from the AIME/GPQA domain distribution
    uniform_fraction: float = Field(0.7, ge=0, le=1)
    benchmark_aime_patterns: list[str] = ["aime"]  # regexes on source_type (s1: qq8933/AIME_1983_2024)
    benchmark_gpqa_patterns: list[str] = ["gpqa"]  # (s1: Idavidrein/gpqa)
    gpqa_weight: float = Field(0.5, ge=0)  # GPQA's total weight relative to AIME's


# ---------------------------------------------------------------------------------------
# Resolved views of the pool (vectorised)
# ---------------------------------------------------------------------------------------

def _lengths(pool: pd.DataFrame, p: SelectionParams) -> np.ndarray:
    if p.length_column not in pool.columns:
        raise SelectionError(f"pool has no {p.length_column!r} column (thinking length in tokens); "
                             "run the scoring stages or set params.length_column")
    return pd.to_numeric(pool[p.length_column], errors="coerce").fillna(0).to_numpy(dtype=np.int64)


def _domains(pool: pd.DataFrame, p: SelectionParams) -> np.ndarray:
    dom = pool[p.domain_column] if p.domain_column in pool.columns else pd.Series(None, index=pool.index)
    dom = dom.astype(object)
    if "domain_pred" in pool.columns:
        dom = dom.where(dom.notna() & (dom.astype(str) != ""), pool["domain_pred"].astype(object))
    dom = dom.where(dom.notna() & (dom.astype(str) != ""), UNKNOWN_DOMAIN)
    return dom.astype(str).to_numpy()


def _correct(pool: pd.DataFrame) -> np.ndarray:
    """Teacher attempt graded correct: the source's grade, else the teacher stage's grade."""
    out = pd.Series(pd.NA, index=pool.index, dtype="boolean")
    for col in ("attempt_correct", "trace_correct"):
        if col in pool.columns:
            out = out.fillna(pool[col].astype("boolean"))
    return out.fillna(False).to_numpy(dtype=bool)


def _matches(series: pd.Series, patterns: list[str]) -> np.ndarray:
    if not patterns:
        return np.zeros(len(series), dtype=bool)
    regex = "|".join(f"(?:{p})" for p in patterns)
    with warnings.catch_warnings():  # user patterns may hold groups; we only need a match
        warnings.simplefilter("ignore", UserWarning)
        hits = series.astype(str).str.contains(regex, case=False, regex=True, na=False)
    return hits.to_numpy(dtype=bool)


def _ids(pool: pd.DataFrame) -> np.ndarray:
    if "id" in pool.columns:
        return pool["id"].astype(str).to_numpy()
    return np.char.zfill(np.arange(len(pool)).astype(str), 12)


def forced_mask(pool: pd.DataFrame, params: SelectionParams | None = None) -> np.ndarray:
    """s1's forced inclusions: correct AIME/GPQA, plus correct MATH with long traces."""
    p = params or SelectionParams()
    source = pool["source_type"] if "source_type" in pool.columns else pd.Series("", index=pool.index)
    correct = _correct(pool) if p.require_correct else np.ones(len(pool), dtype=bool)
    lengths = _lengths(pool, p)
    hard_source = _matches(source, p.forced_source_patterns)
    long_math = _matches(source, p.math_source_patterns) & (lengths > p.math_min_tokens)
    return correct & (hard_source | long_math)


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------

def _domain_queues(candidates: np.ndarray, domains: np.ndarray, lengths: np.ndarray,
                   ids: np.ndarray) -> list[list[int]]:
    """Per domain (sorted by name), candidate row indices from longest to shortest trace."""
    if len(candidates) == 0:
        return []
    d = domains[candidates]
    # lexsort: last key is primary. Domain, then length descending, then id for ties.
    order = np.lexsort((ids[candidates], -lengths[candidates], d))
    ranked = candidates[order]
    d_sorted = d[order]
    cuts = np.flatnonzero(d_sorted[1:] != d_sorted[:-1]) + 1
    return [chunk.tolist() for chunk in np.split(ranked, cuts)]


def _draw_rank(rng: np.random.Generator, m: int) -> int:
    """A rank in [0, m) with P(rank) proportional to 2^-rank (inverse CDF of a truncated geometric)."""
    if m == 1:
        return 0
    u = rng.random()
    tail = 2.0 ** -m if m < 1000 else 0.0
    k = math.ceil(-math.log2(1.0 - u * (1.0 - tail))) - 1
    return min(max(k, 0), m - 1)


def _sample_by_domain(queues: list[list[int]], n: int, rng: np.random.Generator,
                      weighted: bool) -> list[int]:
    """Repeat: uniform domain, then a question by 2^-rank (weighted) or uniformly; remove it."""
    picked: list[int] = []
    live = [q for q in queues if q]
    while len(picked) < n and live:
        j = int(rng.integers(len(live)))
        queue = live[j]
        k = _draw_rank(rng, len(queue)) if weighted else int(rng.integers(len(queue)))
        picked.append(queue.pop(k))
        if not queue:
            live.pop(j)
    return picked


def benchmark_domain_weights(pool: pd.DataFrame, domains: np.ndarray, p: SelectionParams) -> dict[str, float]:
    """s1's cell 17: AIME domain counts + GPQA domain counts x (gpqa_weight x n_AIME / n_GPQA),
    each GPQA count truncated to an integer, zero counts dropped; normalised to sum 1."""
    source = pool["source_type"] if "source_type" in pool.columns else pd.Series("", index=pool.index)
    aime = pd.Series(domains[_matches(source, p.benchmark_aime_patterns)]).value_counts()
    gpqa = pd.Series(domains[_matches(source, p.benchmark_gpqa_patterns)]).value_counts()
    counts: dict[str, int] = {str(d): int(c) for d, c in aime.items()}
    if len(gpqa):
        ratio = p.gpqa_weight * aime.sum() / gpqa.sum()
        for d, c in gpqa.items():
            counts[str(d)] = counts.get(str(d), 0) + int(c * ratio)
    counts = {d: c for d, c in counts.items() if c > 0}
    total = sum(counts.values())
    return {d: c / total for d, c in counts.items()}


def _sample_s1k(queues: list[list[int]], names: list[str], selected: list[int], n: int, uniform_until: int,
                bench: dict[str, float], rng: np.random.Generator) -> list[int]:
    """s1's cell 21; ``selected`` starts with the forced rows, which the queues also hold."""
    chosen = set(selected)
    live = [j for j, q in enumerate(queues) if q]
    bench_live = [j for j in live if names[j] in bench]
    while len(selected) < n and live:
        if len(selected) < uniform_until or not bench_live:  # s1 had no fallback: its pool always had both
            j = live[int(rng.integers(len(live)))]
        else:
            w = np.array([bench[names[j]] for j in bench_live])
            j = bench_live[int(rng.choice(len(bench_live), p=w / w.sum()))]
        queue = queues[j]
        row = queue.pop(_draw_rank(rng, len(queue)))
        if row not in chosen:  # a forced row drawn again is only removed from its domain
            chosen.add(row)
            selected.append(row)
        if not queue:
            live.remove(j)
            if j in bench_live:
                bench_live.remove(j)
    return selected


def select_indices(pool: pd.DataFrame, criterion: str, size: int | None, seed: int,
                   params: SelectionParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the selected rows in order, and a parallel bool array: forced inclusion."""
    p = params or SelectionParams()
    if criterion not in CRITERIA:
        raise SelectionError(f"unknown criterion {criterion!r}; choose from {list(CRITERIA)}")
    n_pool = len(pool)
    if size is not None and size < 0:
        raise SelectionError(f"size must be >= 0, got {size}")
    n = n_pool if (size is None or criterion == "full") else min(size, n_pool)
    rng = np.random.default_rng(seed)
    all_rows = np.arange(n_pool)
    none_forced = np.zeros(n, dtype=bool)
    if criterion == "full":
        return all_rows, np.zeros(n_pool, dtype=bool)
    if criterion == "random":
        return np.sort(rng.choice(n_pool, size=n, replace=False)) if n < n_pool else all_rows, none_forced
    ids = _ids(pool)
    if criterion == "longest":
        lengths = _lengths(pool, p)
        return np.lexsort((ids, -lengths))[:n], none_forced
    if criterion == "difficulty":
        if p.failures_column not in pool.columns:
            raise SelectionError(f"pool has no {p.failures_column!r} column; run the difficulty stage")
        fails = pd.to_numeric(pool[p.failures_column], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
        return np.lexsort((ids, -_lengths(pool, p), -fails))[:n], none_forced
    lengths = _lengths(pool, p)
    domains = _domains(pool, p)
    if criterion == "diverse":
        picked = _sample_by_domain(_domain_queues(all_rows, domains, lengths, ids), n, rng, weighted=False)
        return np.asarray(picked, dtype=np.int64), none_forced
    # s1 (what built s1K) and algorithm1 (the paper's Algorithm 1): forced rows first
    forced = forced_mask(pool, p) if p.forced else np.zeros(n_pool, dtype=bool)
    forced_rows = all_rows[forced]
    if len(forced_rows) >= n:  # more forced than wanted: keep the longest forced ones
        keep = forced_rows[np.lexsort((ids[forced_rows], -lengths[forced_rows]))][:n]
        return keep, np.ones(len(keep), dtype=bool)
    if criterion == "s1":
        queues = _domain_queues(all_rows, domains, lengths, ids)
        names = [str(domains[q[0]]) for q in queues]
        bench = benchmark_domain_weights(pool, domains, p)
        rows = np.asarray(_sample_s1k(queues, names, forced_rows.tolist(), n, round(p.uniform_fraction * n),
                                      bench, rng), dtype=np.int64)
    else:
        queues = _domain_queues(all_rows[~forced], domains, lengths, ids)
        sampled = _sample_by_domain(queues, n - len(forced_rows), rng, weighted=True)
        rows = np.concatenate([forced_rows, np.asarray(sampled, dtype=np.int64)])
    is_forced = np.zeros(len(rows), dtype=bool)
    is_forced[: len(forced_rows)] = True
    return rows, is_forced


def select_subset(pool: pd.DataFrame, criterion: str, size: int | None, seed: int,
                  params: SelectionParams | None = None) -> pd.DataFrame:
    """The selected rows in selection order, with ``selection_rank`` and ``selection_forced``."""
    rows, forced = select_indices(pool, criterion, size, seed, params)
    out = pool.iloc[rows].reset_index(drop=True)
    out["selection_rank"] = np.arange(len(out), dtype=np.int64)
    out["selection_forced"] = forced
    return out


# ---------------------------------------------------------------------------------------
# `s1ray select`: read the scored pool, write the subset (s1K schema) and a report
# ---------------------------------------------------------------------------------------

# s1K's own column types (simplescaling/s1K, data_ablation_full59K): `cot` is all-null there.
S1K_SCHEMA = pa.schema([("solution", pa.string()), ("question", pa.string()), ("cot_type", pa.string()),
                        ("source_type", pa.string()), ("metadata", pa.string()), ("cot", pa.null()),
                        ("thinking_trajectories", pa.list_(pa.string())), ("attempt", pa.string())])
S1K_COLUMNS = S1K_SCHEMA.names
EXTRA_SCHEMA = pa.schema([("id", pa.string()), ("domain", pa.string()), ("answer", pa.string()),
                          ("thinking_tokens", pa.int64()), ("solver_failures", pa.int64()),
                          ("selection_rank", pa.int64()), ("selection_forced", pa.bool_())])
EXTRA_COLUMNS = EXTRA_SCHEMA.names


class SelectConfig(StrictModel):
    """``s1ray select``: one criterion, size and seed over a scored pool."""

    input: str  # scored pool: a Parquet file or a folder of Parquet files
    output_dir: str = "outputs/select"
    criterion: Criterion = "s1"
    size: int | None = 1000
    seed: int = 0
    params: SelectionParams = SelectionParams()
    formats: list[Literal["parquet", "jsonl", "hf"]] = ["parquet", "jsonl", "hf"]
    plot: bool = True
    only_kept: bool = True  # a curate scored pool holds every row; select from those with keep=True


def read_pool(path: str | Path) -> pd.DataFrame:
    """A scored pool from one Parquet file or a folder of them (e.g. Ray's write_parquet)."""
    path = Path(path)
    if not path.exists():
        raise SelectionError(f"scored pool not found: {path}")
    if path.is_dir() and not any(path.rglob("*.parquet")):
        raise SelectionError(f"{path} holds no .parquet files")
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types
        raise SelectionError(f"cannot read scored pool {path}: {e}") from e


def _present(value: Any) -> bool:
    if value is None:
        return False
    if pd.api.types.is_scalar(value):
        return not pd.isna(value) and value != ""
    return True


def _trajectories(row: dict[str, Any]) -> list[str]:
    traces = row.get("thinking")
    traces = [str(t) for t in (list(traces) if _present(traces) else []) if _present(t)]
    if not traces and _present(row.get("trace_thinking")):
        traces = [row["trace_thinking"]]
    return traces


def to_s1k(subset: pd.DataFrame) -> pd.DataFrame:
    """Canonical/scored rows -> s1K columns (+ id, domain, answer and scores)."""
    records = subset.to_dict("records")
    domains = _domains(subset, SelectionParams()) if len(subset) else np.array([], dtype=str)
    out = {
        "solution": [r.get("solution") for r in records],
        "question": [r.get("question") for r in records],
        "cot_type": [r.get("cot_type") for r in records],
        "source_type": [r.get("source_type") for r in records],
        "metadata": [r.get("metadata") if isinstance(r.get("metadata"), str) else json.dumps(r.get("metadata"))
                     for r in records],
        "cot": [None] * len(records),
        "thinking_trajectories": [_trajectories(r) for r in records],
        "attempt": [r.get("attempt") if _present(r.get("attempt")) else
                    (r.get("trace_attempt") if _present(r.get("trace_attempt")) else None) for r in records],
    }
    df = pd.DataFrame(out)
    for col in EXTRA_COLUMNS:
        if col == "domain":
            df[col] = list(domains)
        elif col in subset.columns:
            df[col] = subset[col].to_numpy()
    return df


def s1k_table(s1k: pd.DataFrame) -> pa.Table:
    """The subset as Arrow with s1K's column types whatever the values (an all-null column keeps
    its type), so it concatenates with s1K itself; extra columns have fixed types too."""
    fields = [f for f in list(S1K_SCHEMA) + list(EXTRA_SCHEMA) if f.name in s1k.columns]
    cols = []
    for f in fields:
        values = [None if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)) else v for v in s1k[f.name]]
        if pa.types.is_integer(f.type):
            values = [None if v is None else int(v) for v in values]
        elif pa.types.is_list(f.type):
            values = [None if v is None else [str(x) for x in v] for v in values]
        elif f.type == pa.string():
            values = [None if v is None else str(v) for v in values]
        elif f.type == pa.null():
            values = [None] * len(values)
        try:
            cols.append(pa.array(values, f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
            raise SelectionError(f"column {f.name!r} cannot be written as s1K's {f.type}: {e}") from e
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def selection_report(subset: pd.DataFrame, cfg: SelectConfig, n_pool: int, seconds: float) -> dict[str, Any]:
    lengths = _lengths(subset, cfg.params) if len(subset) else np.array([], dtype=np.int64)
    source = subset["source_type"].astype(str) if "source_type" in subset.columns else pd.Series([], dtype=str)
    pct = (lambda q: int(np.percentile(lengths, q))) if len(lengths) else (lambda q: 0)
    return {
        "criterion": cfg.criterion,
        "size_requested": cfg.size,
        "size": int(len(subset)),
        "pool_size": int(n_pool),
        "seed": cfg.seed,
        "seconds": round(seconds, 4),
        "forced": int(subset["selection_forced"].sum()) if "selection_forced" in subset.columns else 0,
        "domains": {str(k): int(v) for k, v in pd.Series(_domains(subset, cfg.params)).value_counts().items()}
        if len(subset) else {},
        "sources": {str(k): int(v) for k, v in source.value_counts().items()},
        "thinking_tokens": {"mean": float(lengths.mean()) if len(lengths) else 0.0, "p10": pct(10),
                            "median": pct(50), "p90": pct(90), "max": int(lengths.max()) if len(lengths) else 0},
        "params": cfg.params.model_dump(),
    }


def _report_markdown(rep: dict[str, Any]) -> str:
    lines = [f"# Selection: {rep['criterion']} (seed {rep['seed']})", "",
             f"- selected {rep['size']} of {rep['pool_size']} (requested {rep['size_requested']}), "
             f"{rep['forced']} forced, in {rep['seconds']} s",
             "- thinking tokens: " + ", ".join(f"{k} {v:g}" for k, v in rep["thinking_tokens"].items()),
             "", "| domain | n |", "|---|---|"]
    from s1ray.report import domain_label  # "90 Operations research, ..." rather than a bare code

    lines += [f"| {domain_label(k)} | {v} |" for k, v in rep["domains"].items()]
    lines += ["", "| source_type | n |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rep["sources"].items()]
    lines += ["", "## Parameters", "```json", json.dumps(rep["params"], indent=2), "```", ""]
    return "\n".join(lines)


def _plot_lengths(pool_lengths: np.ndarray, subset_lengths: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    top = max(int(pool_lengths.max()) if len(pool_lengths) else 1, 1)
    bins = np.linspace(0, top, 41)
    ax.hist(pool_lengths, bins=bins, alpha=0.5, density=True, label=f"pool (n={len(pool_lengths)})")
    ax.hist(subset_lengths, bins=bins, alpha=0.6, density=True, label=f"selected (n={len(subset_lengths)})")
    ax.set_xlabel("thinking length (tokens)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_subset(s1k: pd.DataFrame, out: Path, formats: list[str]) -> dict[str, str]:
    """Parquet / JSONL / ``save_to_disk`` with s1K's column types (:func:`s1k_table`)."""
    import pyarrow.parquet as pq

    table = s1k_table(s1k)
    paths: dict[str, str] = {}
    if "parquet" in formats:
        paths["parquet"] = str(out / "subset.parquet")
        pq.write_table(table, paths["parquet"])
    if "jsonl" in formats:
        from s1ray.io.writers import write_jsonl

        paths["jsonl"] = str(out / "subset.jsonl")
        write_jsonl(table.to_pylist(), paths["jsonl"])
    if "hf" in formats:
        import datasets

        paths["hf"] = str(out / "subset_hf")
        datasets.Dataset(table).save_to_disk(paths["hf"])
    return paths


SELECT_OUTPUTS = ["subset.parquet", "subset.jsonl", "subset_hf", "report.json", "report.md", "select_config.yaml",
                  "thinking_lengths.png"]


def run_select(cfg: SelectConfig) -> dict[str, Any]:
    """``s1ray select``: scored pool in, subset (s1K schema) + report out, written as one unit by
    one run at a time (:mod:`s1ray.io.outputs`)."""
    from s1ray.io.outputs import output_lock, staged_outputs

    with output_lock(cfg.output_dir, "select"):
        pool = read_pool(cfg.input)
        if cfg.only_kept and "keep" in pool.columns:
            pool = pool[pool["keep"].astype("boolean").fillna(False).to_numpy(dtype=bool)].reset_index(drop=True)
        t0 = time.perf_counter()
        subset = select_subset(pool, cfg.criterion, cfg.size, cfg.seed, cfg.params)
        seconds = time.perf_counter() - t0
        out = Path(cfg.output_dir)
        with staged_outputs(out, "select", SELECT_OUTPUTS, cfg) as staged:
            stage = staged.folder
            staged_paths = write_subset(to_s1k(subset), stage, cfg.formats)
            rep = selection_report(subset, cfg, len(pool), seconds)
            (stage / "report.json").write_text(json.dumps(rep, indent=2))
            (stage / "report.md").write_text(_report_markdown(rep))
            (stage / "select_config.yaml").write_text(dump_config(cfg))
            staged_paths.update(report_json=str(stage / "report.json"), report_md=str(stage / "report.md"))
            if cfg.plot and len(subset):
                staged_paths["plot"] = str(stage / "thinking_lengths.png")
                _plot_lengths(_lengths(pool, cfg.params), _lengths(subset, cfg.params), Path(staged_paths["plot"]),
                              f"{cfg.criterion}: {len(subset)} of {len(pool)}")
            rows = {name: len(subset) for name in ("subset.parquet", "subset.jsonl", "subset_hf")}
            staged.commit(rows=rows)
    paths = {k: str(out / Path(v).name) for k, v in staged_paths.items()}
    return {"size": rep["size"], "pool_size": rep["pool_size"], "forced": rep["forced"],
            "domains": len(rep["domains"]), "seconds": rep["seconds"], "paths": paths}
