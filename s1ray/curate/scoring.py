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

from s1ray.config import StrictModel
from s1ray.curate.difficulty import DifficultyConfig, SolverAttempts, add_failures, difficulty_reason
from s1ray.curate.domains import DomainsConfig, EmbeddingDomains, LLMDomains, refine_by_clusters
from s1ray.curate.lengths import LengthsConfig, TraceLengths
from s1ray.curate.traces import TeacherTraces, TracesConfig

log = logging.getLogger(__name__)


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


def fitted_cpus(requested: list[tuple[float, int]], total: float, reserve: float = 0.5) -> list[float]:
    """Per-actor CPUs so that every pool's actors fit in ``total - reserve`` CPUs together."""
    need = sum(c * n for c, n in requested)
    if need <= total - reserve:
        return [c for c, _ in requested]
    scale = max(total - reserve, 0.05 * len(requested)) / need
    return [max(0.01, math.floor(c * scale * 1000) / 1000) for c, _ in requested]


def score_dataset(ds: Any, cfg: ScoringConfig) -> Any:
    """``ds`` with the scoring stages appended (lazy, streaming), plus ``solver_failures``."""
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
        ds = ds.map_batches(cls, fn_constructor_kwargs=kwargs,
                            compute=ray.data.ActorPoolStrategy(size=pool.concurrency),
                            batch_size=pool.batch_size, batch_format="pandas", **resources)
        if name == "domains" and cfg.domains.method == "embedding" and cfg.domains.refine_clusters > 0:
            ds = refine_domains_dataset(ds, cfg.domains)
    names = [s.name for s in cfg.difficulty.solvers] if cfg.difficulty.enabled else []
    return ds.map_batches(add_failures, fn_kwargs={"solver_names": names}, batch_format="pandas")


def refine_domains_dataset(ds: Any, cfg: DomainsConfig) -> Any:
    """Cluster refinement needs every embedding: materialize, fit k-means here, relabel in batches."""
    ds = ds.materialize()
    emb = np.stack(ds.select_columns(["_domain_emb"]).to_pandas()["_domain_emb"].to_numpy())
    emb = emb.astype(np.float32)
    from s1ray.curate.domains import kmeans

    rng = np.random.default_rng(cfg.seed)
    sample = emb if len(emb) <= 20_000 else emb[rng.choice(len(emb), 20_000, replace=False)]
    centroids, _ = kmeans(sample, cfg.refine_clusters, seed=cfg.seed)
    code_emb = EmbeddingDomains(cfg).code_emb
    return ds.map_batches(_relabel, fn_kwargs={"centroids": centroids, "code_emb": code_emb,
                                                "weight": cfg.refine_weight}, batch_format="pandas")


def _relabel(df: pd.DataFrame, centroids: np.ndarray, code_emb: np.ndarray, weight: float) -> pd.DataFrame:
    from s1ray.curate.domains import load_msc, msc_titles

    codes = [e["code"] for e in load_msc()]
    titles = msc_titles()
    emb = np.stack(df["_domain_emb"].to_numpy()).astype(np.float32)
    labels = np.argmax(emb @ centroids.T, axis=1)
    scores = (1.0 - weight) * (emb @ code_emb.T) + weight * (centroids @ code_emb.T)[labels]
    best = scores.argmax(axis=1)
    out = df.drop(columns=["_domain_emb"])
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
