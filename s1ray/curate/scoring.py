"""Model scoring stages of the funnel, appended to a Ray Dataset as actor pools.

Order: teacher traces (rows without one) -> trace length in tokens -> domain -> solver
attempts + grades -> ``solver_failures``. Every stage only adds columns. Filtering is a
separate step (:func:`scoring_outcome`): rows whose teacher trace kept failing are
quarantined, rows the solvers found easy are dropped by the difficulty filter.

On a small machine all actor pools of a streaming pipeline must fit at once next to the read
tasks, so :func:`score_dataset` scales the per-actor CPU reservation down to fit (on 2 CPUs,
one pool at ``num_cpus=1`` per actor x 2 actors would starve the read tasks and hang).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from s1ray.config import StrictModel
from s1ray.curate.difficulty import DifficultyConfig, SolverAttempts, add_failures, difficulty_reason
from s1ray.curate.domains import DomainsConfig, EmbeddingDomains, LLMDomains
from s1ray.curate.lengths import LengthsConfig, TraceLengths
from s1ray.curate.traces import TeacherTraces, TracesConfig, is_null

log = logging.getLogger(__name__)
LIGHT_CPUS = 0.25  # cheap per-batch column arithmetic between the model stages


class PoolConfig(StrictModel):
    """Actor pool of the embedding and tokenizer stages (model stages use their generation config)."""

    concurrency: int = 1
    num_cpus: float = 0.5
    batch_size: int = 256


class ScoringConfig(StrictModel):
    """The ``scoring`` section of ``s1ray curate``; absent = rule stages only."""

    traces: TracesConfig = TracesConfig()
    lengths: LengthsConfig = LengthsConfig()
    domains: DomainsConfig = DomainsConfig()
    difficulty: DifficultyConfig = DifficultyConfig()
    pool: PoolConfig = PoolConfig()


def _stages(cfg: ScoringConfig) -> list[tuple[str, Any, dict[str, Any], Any]]:
    """(name, callable class, constructor kwargs, pool settings) of each enabled stage."""
    stages: list[tuple[str, Any, dict[str, Any], Any]] = []
    if cfg.traces.enabled:
        stages.append(("traces", TeacherTraces, {"cfg": cfg.traces}, cfg.traces.teacher))
    if cfg.lengths.enabled:
        stages.append(("lengths", TraceLengths, {"cfg": cfg.lengths}, cfg.pool))
    if cfg.domains.enabled:
        if cfg.domains.method == "llm":
            stages.append(("domains", LLMDomains, {"cfg": cfg.domains}, cfg.domains.llm))
        else:
            stages.append(("domains", EmbeddingDomains,
                           {"cfg": cfg.domains, "keep_embeddings": cfg.domains.refine_clusters > 0}, cfg.pool))
    if cfg.difficulty.enabled:
        d = cfg.difficulty
        for solver in d.solvers:
            stages.append((f"solver:{solver.name}", SolverAttempts,
                           {"solver": solver, "judge": d.judge, "judge_mode": d.judge_mode,
                            "keep_responses": d.keep_responses}, solver.generation))
    return stages


def fitted_cpus(requested: list[tuple[float, int]], total: float, reserve: float = 1.0) -> list[float]:
    """Per-actor CPUs so that every pool's actors fit in ``total - reserve`` CPUs together.

    ``reserve`` must fit the largest upstream task: read and map tasks ask for 1 CPU by default,
    and with less than that free they wait forever behind the actors (a silent hang)."""
    need = sum(c * n for c, n in requested)
    if need <= total - reserve:
        return [c for c, _ in requested]
    scale = max(total - reserve, 0.05 * len(requested)) / need
    return [max(0.01, math.floor(c * scale * 1000) / 1000) for c, _ in requested]


# Types of every column the stages add, so blocks always agree (an all-null block would
# otherwise become Arrow's null type and break concatenation and Parquet reads).
COLUMN_TYPES: dict[str, pa.DataType] = {
    "teacher_thinking": pa.string(), "teacher_attempt": pa.string(), "trace_source": pa.string(),
    "trace_thinking": pa.string(), "trace_attempt": pa.string(), "trace_error": pa.string(),
    "trace_correct": pa.bool_(), "thinking_tokens": pa.int64(),
    "domain_pred": pa.string(), "domain_title": pa.string(), "domain_score": pa.float32(),
    "domain_method": pa.string(), "domain_raw": pa.string(), "domain_cluster": pa.int64(),
    "_domain_emb": pa.list_(pa.float32()), "solver_solved": pa.int64(), "solver_failures": pa.int64(),
}
_SUFFIX_TYPES = {"_correct": pa.bool_(), "_extracted": pa.string(), "_reason": pa.string(),
                 "_tokens": pa.int64(), "_response": pa.string()}
SCORE_COLUMN_DOCS = {
    "teacher_thinking / teacher_attempt": "teacher's trace and answer (rows without their own trace)",
    "trace_thinking / trace_attempt / trace_source": "resolved trace: the source's own, else the teacher's",
    "trace_error": "why the teacher kept failing (row is quarantined)",
    "trace_correct": "resolved attempt graded correct (source grade, else graded vs the reference)",
    "thinking_tokens": "resolved trace length in tokens of the configured tokenizer",
    "domain_pred / domain_title / domain_score / domain_method": "MSC top-level code from the classifier",
    "solver_<name>_correct / _extracted / _reason / _tokens": "each solver's graded attempt",
    "solver_solved / solver_failures": "solvers that got it right / wrong (or gave no gradable answer)",
}


def column_type(name: str) -> pa.DataType | None:
    if name in COLUMN_TYPES:
        return COLUMN_TYPES[name]
    if name.startswith("solver_"):
        for suffix, typ in _SUFFIX_TYPES.items():
            if name.endswith(suffix):
                return typ
    return None


def _arrow_column(values: list[Any], name: str) -> pa.Array:
    typ = column_type(name)
    clean = [None if is_null(v) else v for v in values]
    if typ is None:
        return pa.array(clean, from_pandas=True)
    if pa.types.is_list(typ):
        clean = [None if v is None else np.asarray(v, dtype=np.float32) for v in clean]
    return pa.array(clean, type=typ, from_pandas=True)


class ArrowStage:
    """Runs a pandas stage on an Arrow batch and APPENDS its new columns with fixed types.

    The input columns pass through untouched (no pandas round trip), rows marked in
    ``skip_column`` (e.g. already dropped by a rule stage) are not sent to the model and get
    nulls, and replaced columns (``_domain_emb`` after refinement) are dropped.
    """

    def __init__(self, fn: Any, kwargs: dict[str, Any] | None = None, skip_column: str | None = None,
                 construct: bool = True, replace: tuple[str, ...] = ()):
        self.fn = fn(**(kwargs or {})) if construct else fn
        self.kwargs = {} if construct else (kwargs or {})
        self.skip_column = skip_column
        self.replace = replace  # existing columns the stage recomputes

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        active = np.ones(n, dtype=bool)
        if self.skip_column and self.skip_column in batch.column_names:
            active = ~np.asarray(batch[self.skip_column].to_numpy(zero_copy_only=False), dtype=bool)
        rows = np.flatnonzero(active)
        if len(rows) == 0:
            return batch
        df = batch.take(pa.array(rows)).to_pandas() if len(rows) < n else batch.to_pandas()
        res = self.fn(df, **self.kwargs)
        new = [c for c in res.columns if c not in batch.column_names or c in self.replace]
        gone = [c for c in batch.column_names if c not in res.columns or c in self.replace]
        out = batch.drop_columns(gone) if gone else batch
        for col in new:
            values: list[Any] = [None] * n
            for i, v in zip(rows, res[col].tolist()):
                values[i] = v
            out = out.append_column(col, _arrow_column(values, col))
        return out


def score_dataset(ds: Any, cfg: ScoringConfig, skip_column: str | None = None) -> Any:
    """``ds`` with the scoring stages appended (lazy, streaming), plus ``solver_failures``.

    Rows where ``skip_column`` is true are passed through unscored (their score columns null).
    """
    import ray

    stages = _stages(cfg)
    total = float(ray.cluster_resources().get("CPU", 1.0)) if ray.is_initialized() else 2.0
    cpus = fitted_cpus([(p.num_cpus, p.concurrency) for _, _, _, p in stages], total)
    for (name, cls, kwargs, pool), ncpu in zip(stages, cpus):
        if ncpu < pool.num_cpus:
            log.warning("scoring stage %s: num_cpus %.2f -> %.2f per actor so all pools fit on %.0f CPUs",
                        name, pool.num_cpus, ncpu, total)
        resources: dict[str, Any] = {"num_cpus": ncpu}
        if getattr(pool, "num_gpus", 0):
            resources["num_gpus"] = pool.num_gpus
        ds = ds.map_batches(ArrowStage, fn_constructor_kwargs={"fn": cls, "kwargs": kwargs, "skip_column": skip_column},
                            compute=ray.data.ActorPoolStrategy(size=pool.concurrency),
                            batch_size=pool.batch_size, batch_format="pyarrow", **resources)
        if name == "domains" and cfg.domains.method == "embedding" and cfg.domains.refine_clusters > 0:
            ds = refine_domains_dataset(ds, cfg.domains, skip_column)
    names = [s.name for s in cfg.difficulty.solvers] if cfg.difficulty.enabled else []
    return ds.map_batches(ArrowStage(add_failures, {"solver_names": names}, skip_column=skip_column, construct=False),
                          batch_format="pyarrow", num_cpus=LIGHT_CPUS)


def refine_domains_dataset(ds: Any, cfg: DomainsConfig, skip_column: str | None = None) -> Any:
    """Cluster refinement needs every embedding: materialize, fit k-means here, relabel in batches."""
    from s1ray.curate.domains import kmeans

    ds = ds.materialize()
    col = ds.select_columns(["_domain_emb"]).to_pandas()["_domain_emb"]
    emb = np.stack([v for v in col if hasattr(v, "__len__")]).astype(np.float32)  # skipped rows: null
    rng = np.random.default_rng(cfg.seed)
    sample = emb if len(emb) <= 20_000 else emb[rng.choice(len(emb), 20_000, replace=False)]
    centroids, _ = kmeans(sample, cfg.refine_clusters, seed=cfg.seed)
    code_emb = EmbeddingDomains(cfg).code_emb
    stage = ArrowStage(_relabel, {"centroids": centroids, "code_emb": code_emb, "weight": cfg.refine_weight},
                       skip_column=skip_column, construct=False,
                       replace=("domain_pred", "domain_title", "domain_score", "domain_method"))
    return ds.map_batches(stage, batch_format="pyarrow", num_cpus=LIGHT_CPUS).drop_columns(["_domain_emb"])


def _relabel(df: pd.DataFrame, centroids: np.ndarray, code_emb: np.ndarray, weight: float) -> pd.DataFrame:
    """Blend each row's code scores with its nearest centroid's (see domains.refine_by_clusters)."""
    from s1ray.curate.domains import load_msc, msc_titles

    codes = [e["code"] for e in load_msc()]
    titles = msc_titles()
    emb = np.stack(df["_domain_emb"].to_numpy()).astype(np.float32)
    labels = np.argmax(emb @ centroids.T, axis=1)
    scores = (1.0 - weight) * (emb @ code_emb.T) + weight * (centroids @ code_emb.T)[labels]
    best = scores.argmax(axis=1)
    out = df.drop(columns=["domain_pred", "domain_title", "domain_score", "domain_method"])
    out["domain_pred"] = [codes[j] for j in best]
    out["domain_title"] = [titles[codes[j]] for j in best]
    out["domain_score"] = scores[np.arange(len(df)), best].astype(np.float32)
    out["domain_method"] = "embedding+clusters"
    out["domain_cluster"] = labels.astype(np.int64)
    return out


def scoring_outcome(df: pd.DataFrame, cfg: ScoringConfig) -> pd.DataFrame:
    """Adds ``scoring_quarantine`` (unusable: trace generation kept failing) and
    ``scoring_drop`` (filtered: too easy for the solvers); both null for kept rows."""
    out = df.copy()
    n = len(df)
    quarantine: list[str | None] = [None] * n
    if cfg.traces.enabled and "trace_error" in df.columns:
        quarantine = [f"teacher trace failed: {e}" if isinstance(e, str) and e else None for e in df["trace_error"]]
    drop: list[str | None] = [None] * n
    if cfg.difficulty.enabled and cfg.difficulty.solvers:
        drop = difficulty_reason(df, cfg.difficulty)
    out["scoring_quarantine"] = quarantine
    out["scoring_drop"] = [None if q else d for q, d in zip(quarantine, drop)]
    return out


def stage_names(cfg: ScoringConfig) -> list[str]:
    return [name for name, *_ in _stages(cfg)]


# ---------------------------------------------------------------------------------------
# `s1ray curate` integration: one pipeline stage after the rule stages, and its filter
# ---------------------------------------------------------------------------------------

SKIP_COLUMN = "_scoring_skip"


def _mark_rule_drops(batch: pa.Table, cfg: Any) -> pa.Table:
    from s1ray.curate.funnel import drop_reasons as rule_drops

    stage, _ = rule_drops(batch, cfg)
    return batch.append_column(SKIP_COLUMN, pa.array(stage != "", pa.bool_()))


def score_curated(ds: Any, cfg: Any) -> Any:
    """The ``scoring`` stage of ``s1ray curate``: model stages on the rows the rules keep only
    (no teacher or solver time on duplicates and contaminated rows); dropped rows get nulls."""
    ds = ds.map_batches(_mark_rule_drops, fn_kwargs={"cfg": cfg}, batch_format="pyarrow",
                        batch_size=cfg.batch_size, num_cpus=LIGHT_CPUS)
    return score_dataset(ds, cfg.scoring, skip_column=SKIP_COLUMN).drop_columns([SKIP_COLUMN])


def drop_reasons(batch: pa.Table, cfg: ScoringConfig) -> list[tuple[str, np.ndarray]]:
    """(stage, reason per row; '' = kept) for the funnel's filter step: rows whose teacher trace
    kept failing (``traces``, reason ``quarantined: ...``), then rows the solvers found easy."""
    n = batch.num_rows
    names = batch.column_names
    out: list[tuple[str, np.ndarray]] = []
    if cfg.traces.enabled and "trace_error" in names:
        err = batch["trace_error"].to_pylist()
        out.append(("traces", np.array([f"quarantined: teacher trace failed: {e}" if e else "" for e in err],
                                       dtype=object)))
    if cfg.difficulty.enabled and cfg.difficulty.solvers and "solver_solved" in names:
        df = pd.DataFrame({"solver_solved": batch["solver_solved"].to_pandas().fillna(0).astype(np.int64)})
        why = difficulty_reason(df, cfg.difficulty)
        out.append(("difficulty", np.array([w.split(" solver")[0] if w else "" for w in why], dtype=object)))
    return out or [("difficulty", np.full(n, "", dtype=object))]
