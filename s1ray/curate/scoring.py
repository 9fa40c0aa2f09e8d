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
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from s1ray.config import StrictModel
from s1ray.curate.difficulty import (DifficultyConfig, SolverAttempts, SolverConfig, _safe_name, add_failures,
                                     difficulty_reason)
from s1ray.curate.domains import DomainsConfig, EmbeddingDomains, LLMDomains
from s1ray.curate.lengths import LengthsConfig, TraceLengths
from s1ray.curate.stage import Stage
from s1ray.curate.traces import TeacherTraces, TracesConfig, has_trace, is_null
from s1ray.models.batch_llm import uses_batch_llm
from s1ray.models.generation import GenerationConfig

log = logging.getLogger(__name__)
LIGHT_CPUS = 0.25  # cheap per-batch column arithmetic between the model stages


class PoolConfig(StrictModel):
    """Actor pool of the embedding and tokenizer stages (model stages use their generation config)."""

    concurrency: int | tuple[int, int] = 1  # actors, or [min, max]
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


# Types of every column the stages add, so blocks always agree (an all-null block would
# otherwise become Arrow's null type and break concatenation and Parquet reads).
COLUMN_TYPES: dict[str, pa.DataType] = {
    "teacher_thinking": pa.string(), "teacher_attempt": pa.string(), "trace_source": pa.string(),
    "trace_thinking": pa.string(), "trace_attempt": pa.string(), "trace_error": pa.string(),
    "trace_correct": pa.bool_(), "thinking_tokens": pa.int64(),
    "domain_pred": pa.string(), "domain_title": pa.string(), "domain_score": pa.float32(),
    "domain_method": pa.string(), "domain_raw": pa.string(), "domain_cluster": pa.int64(),
    "_domain_emb": pa.list_(pa.float32()), "solver_solved": pa.int64(), "solver_failures": pa.int64(),
    "domain_error": pa.string(),
}
_SUFFIX_TYPES = {"_correct": pa.bool_(), "_extracted": pa.string(), "_reason": pa.string(),
                 "_tokens": pa.int64(), "_response": pa.string(), "_error": pa.string()}
SCORE_COLUMN_DOCS = {
    "teacher_thinking / teacher_attempt": "teacher's trace and answer (rows without their own trace)",
    "trace_thinking / trace_attempt / trace_source": "resolved trace: the source's own, else the teacher's",
    "trace_error": "why the teacher kept failing (row is quarantined)",
    "trace_correct": "resolved attempt graded correct (source grade, else graded vs the reference)",
    "thinking_tokens": "resolved trace length in tokens of the configured tokenizer",
    "domain_pred / domain_title / domain_score / domain_method": "MSC top-level code from the classifier",
    "domain_error": "why the LLM classifier gave no code (generation failed for the row)",
    "solver_<name>_correct / _extracted / _reason / _tokens": "each solver's graded attempt",
    "solver_<name>_error": "why the solver's (or its judge's) generation failed for the row",
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
        return merge_columns(batch, rows, self.fn(df, **self.kwargs), self.replace)


def merge_columns(batch: pa.Table, rows: np.ndarray, res: pd.DataFrame, replace: tuple[str, ...] = ()) -> pa.Table:
    """``batch`` plus the columns ``res`` (computed for ``rows`` only) adds, typed; other rows get nulls.

    Columns in ``replace`` are recomputed; batch columns missing from ``res`` are dropped."""
    n = batch.num_rows
    new = [c for c in res.columns if c not in batch.column_names or c in replace]
    gone = [c for c in batch.column_names if c not in res.columns or c in replace]
    out = batch.drop_columns(gone) if gone else batch
    for col in new:
        values: list[Any] = [None] * n
        for i, v in zip(rows, res[col].tolist()):
            values[i] = v
        out = out.append_column(col, _arrow_column(values, col))
    return out


def _set_column(batch: pa.Table, name: str, values: list[Any]) -> pa.Table:
    arr = _arrow_column(values, name)
    if name in batch.column_names:
        return batch.set_column(batch.column_names.index(name), name, arr)
    return batch.append_column(name, arr)


def _values(batch: pa.Table, name: str) -> list[Any]:
    return batch[name].to_pylist() if name in batch.column_names else [None] * batch.num_rows


def _active_rows(batch: pa.Table, skip_column: str | None) -> np.ndarray:
    if skip_column and skip_column in batch.column_names:
        skip = np.asarray(batch[skip_column].to_numpy(zero_copy_only=False), dtype=bool)
        return np.flatnonzero(~skip)
    return np.arange(batch.num_rows)


def _frame(batch: pa.Table, rows: np.ndarray, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The pandas rows a grading function reads (only ``columns`` when given: cheap prompts)."""
    t = batch if columns is None else batch.select([c for c in columns if c in batch.column_names])
    return (t.take(pa.array(rows, pa.int64())) if len(rows) < t.num_rows else t).to_pandas()


# ---------------------------------------------------------------------------------------
# Model stages on Ray Data LLM (backends vllm / openai): build requests -> processor -> finish.
# Same columns as the actor-pool classes; a row whose generation fails records the reason.
# ---------------------------------------------------------------------------------------

TRACE_RETRY = "_trace_retry"
_PROMPT_COLUMNS = ("question", "choices", "thinking", "answer")


def _trace_requests(batch: pa.Table, cfg: TracesConfig, round_: int, skip_column: str | None) -> list[Any]:
    """Round 0: rows without their own trace; later rounds: rows whose last attempt failed."""
    from s1ray.curate.traces import format_question, row_choices, teacher_prompt
    from s1ray.models.batch_llm import prompter, request

    out: list[Any] = [None] * batch.num_rows
    if round_ == 0:
        rows = _active_rows(batch, skip_column)
        rows = rows[~has_trace(_frame(batch, rows, ("thinking",)))] if len(rows) else rows
    else:
        rows = np.flatnonzero([bool(v) for v in _values(batch, TRACE_RETRY)])
    if not len(rows):
        return out
    df = _frame(batch, rows, _PROMPT_COLUMNS)
    gen = prompter(cfg.teacher)
    temp = None if round_ == 0 else cfg.retry_temperature  # a retry samples, so it can differ
    for k, i in enumerate(rows):
        prompt = teacher_prompt(gen, cfg, format_question(df["question"].iat[k], row_choices(df, k)))
        out[i] = request(cfg.teacher, prompt, attempt=round_, temperature=temp)
    return out


def _trace_round(batch: pa.Table, gens: list[Any], cfg: TracesConfig, round_: int) -> pa.Table:
    """Record one attempt per generated row; mark the rows that get another attempt."""
    from s1ray.curate.traces import attempt_outcome

    thinking, attempt = _values(batch, "teacher_thinking"), _values(batch, "teacher_attempt")
    error, retry = _values(batch, "trace_error"), [False] * batch.num_rows
    for i, g in enumerate(gens):
        if g is not None:
            thinking[i], attempt[i], error[i] = attempt_outcome(g, cfg, round_)
            retry[i] = error[i] is not None and round_ + 1 < cfg.max_attempts
    for name, values in (("teacher_thinking", thinking), ("teacher_attempt", attempt), ("trace_error", error)):
        batch = _set_column(batch, name, values)
    return _set_column(batch, TRACE_RETRY, retry)


def _trace_resolve(batch: pa.Table, skip_column: str | None) -> pa.Table:
    from s1ray.curate.traces import resolve_traces

    batch = batch.drop_columns([TRACE_RETRY]) if TRACE_RETRY in batch.column_names else batch
    rows = _active_rows(batch, skip_column)
    if not len(rows):
        return batch
    df = _frame(batch, rows)
    res = resolve_traces(df, ~has_trace(df), list(df["teacher_thinking"]), list(df["teacher_attempt"]),
                         list(df["trace_error"]))
    return merge_columns(batch, rows, res, replace=("teacher_thinking", "teacher_attempt", "trace_error"))


def _any_true(ds: Any, column: str) -> bool:
    import ray

    return any(any(t[column].to_pylist()) for t in ray.get(ds.select_columns([column]).to_arrow_refs())
               if t.num_rows)


def llm_traces(ds: Any, cfg: TracesConfig, skip_column: str | None, num_cpus: float | None = None) -> Any:
    """Teacher traces on Ray Data LLM: a pass over the rows without a trace, then (after the pass
    is materialized) one more pass per extra attempt over the rows that failed, only if any did;
    so the retry engine starts only when needed. Rows still failing keep ``trace_error``."""
    from s1ray.models.batch_llm import generate_dataset

    for round_ in range(cfg.max_attempts):
        if round_ > 0:
            ds = ds.materialize()
            if not _any_true(ds, TRACE_RETRY):
                break
        ds = generate_dataset(ds, cfg.teacher, _trace_requests, _trace_round, num_cpus=num_cpus,
                              build_kwargs={"cfg": cfg, "round_": round_, "skip_column": skip_column},
                              finish_kwargs={"cfg": cfg, "round_": round_})
    return ds.map_batches(_trace_resolve, fn_kwargs={"skip_column": skip_column}, batch_format="pyarrow",
                          num_cpus=LIGHT_CPUS)


def _solver_requests(batch: pa.Table, solver: SolverConfig, skip_column: str | None) -> list[Any]:
    from s1ray.curate.difficulty import solver_prompt
    from s1ray.curate.traces import row_choices
    from s1ray.models.batch_llm import prompter, request

    out: list[Any] = [None] * batch.num_rows
    rows = _active_rows(batch, skip_column)
    if not len(rows):
        return out
    df = _frame(batch, rows, _PROMPT_COLUMNS)
    gen = prompter(solver.generation)
    for k, i in enumerate(rows):
        out[i] = request(solver.generation, solver_prompt(gen, solver, df["question"].iat[k], row_choices(df, k)))
    return out


def _solver_finish(batch: pa.Table, gens: list[Any], solver: SolverConfig, keep_responses: bool,
                   judge_mode: str | None) -> pa.Table:
    """Grade each generated answer; with a judge, mark the rows it should grade (next pass)."""
    from s1ray.curate.difficulty import judge_wanted, rule_grades, solver_columns

    prefix = f"solver_{_safe_name(solver.name)}"
    rows = np.array([i for i, g in enumerate(gens) if g is not None], dtype=np.int64)
    if not len(rows):
        return batch
    df, outs = _frame(batch, rows), [gens[i] for i in rows]
    correct, extracted, reasons, errors = rule_grades(df, outs)
    res = solver_columns(df, prefix, outs, correct, extracted, reasons, errors, keep_responses)
    if judge_mode is not None:
        res[f"_{prefix}_judge"] = judge_wanted(df, outs, correct, judge_mode)
        res[f"_{prefix}_text"] = [g.text for g in outs]
    return merge_columns(batch, rows, res)


def _judge_requests(batch: pa.Table, judge: Any, prefix: str) -> list[Any]:
    from s1ray.grading import JUDGE_PROMPT
    from s1ray.models.batch_llm import prompter, request

    out: list[Any] = [None] * batch.num_rows
    flags, texts = _values(batch, f"_{prefix}_judge"), _values(batch, f"_{prefix}_text")
    questions, refs = _values(batch, "question"), _values(batch, "answer")
    gen = None
    for i, flag in enumerate(flags):
        if flag:
            gen = gen or prompter(judge)
            user = JUDGE_PROMPT.format(problem=str(questions[i]), attempt=texts[i], solution=str(refs[i]))
            out[i] = request(judge, gen.chat_prompt(user))
    return out


class _Replay:
    """A Generator stand-in that returns one finished generation: the judge's reply is parsed by
    ``grading.judge_grade`` exactly as in the actor-pool path."""

    def __init__(self, gen: Any):
        self.gen = gen

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        return user

    def generate(self, prompts: list[str], *args: Any, **kwargs: Any) -> list[Any]:
        return [self.gen]


def _judge_finish(batch: pa.Table, gens: list[Any], prefix: str) -> pa.Table:
    from s1ray.curate.difficulty import with_judgement
    from s1ray.grading import judge_grade

    cols = {k: _values(batch, f"{prefix}_{k}") for k in ("correct", "reason", "error")}
    questions, texts, refs = _values(batch, "question"), _values(batch, f"_{prefix}_text"), _values(batch, "answer")
    for i, g in enumerate(gens):
        if g is not None:
            jg = judge_grade(str(questions[i]), texts[i], str(refs[i]), _Replay(g))
            cols["correct"][i], cols["reason"][i], cols["error"][i] = with_judgement(
                cols["correct"][i], cols["reason"][i], cols["error"][i], jg)
    for k, values in cols.items():
        batch = _set_column(batch, f"{prefix}_{k}", values)
    return batch.drop_columns([c for c in (f"_{prefix}_judge", f"_{prefix}_text") if c in batch.column_names])


def llm_solver(ds: Any, d: DifficultyConfig, solver: SolverConfig, skip_column: str | None,
               num_cpus: float | None = None, judge_cpus: float | None = None) -> Any:
    """One solver on Ray Data LLM, then (with a judge) a judge pass over the rows it should grade."""
    from s1ray.models.batch_llm import generate_dataset

    judge_mode = d.judge_mode if d.judge is not None else None
    ds = generate_dataset(ds, solver.generation, _solver_requests, _solver_finish, num_cpus=num_cpus,
                          build_kwargs={"solver": solver, "skip_column": skip_column},
                          finish_kwargs={"solver": solver, "keep_responses": d.keep_responses,
                                         "judge_mode": judge_mode})
    if d.judge is None:
        return ds
    prefix = f"solver_{_safe_name(solver.name)}"
    return generate_dataset(ds, d.judge, _judge_requests, _judge_finish, num_cpus=judge_cpus,
                            build_kwargs={"judge": d.judge, "prefix": prefix}, finish_kwargs={"prefix": prefix})


def _domain_requests(batch: pa.Table, cfg: DomainsConfig, skip_column: str | None) -> list[Any]:
    from s1ray.curate.domains import LLM_MAX_TOKENS, code_list_text, domain_prompt
    from s1ray.models.batch_llm import prompter, request

    out: list[Any] = [None] * batch.num_rows
    rows = _active_rows(batch, skip_column)
    if not len(rows):
        return out
    gen, codes = prompter(cfg.llm), code_list_text()
    questions = _values(batch, "question")
    for i in rows:
        out[i] = request(cfg.llm, domain_prompt(gen, str(questions[i])[:cfg.max_chars], codes),
                         max_tokens=LLM_MAX_TOKENS)
    return out


def _domain_finish(batch: pa.Table, gens: list[Any]) -> pa.Table:
    from s1ray.curate.domains import domain_columns

    rows = np.array([i for i, g in enumerate(gens) if g is not None], dtype=np.int64)
    if not len(rows):
        return batch
    return merge_columns(batch, rows, domain_columns(_frame(batch, rows), [gens[i] for i in rows]))


def llm_domains(ds: Any, cfg: DomainsConfig, skip_column: str | None, num_cpus: float | None = None) -> Any:
    from s1ray.models.batch_llm import generate_dataset

    return generate_dataset(ds, cfg.llm, _domain_requests, _domain_finish, num_cpus=num_cpus,
                            build_kwargs={"cfg": cfg, "skip_column": skip_column})


def score_dataset(ds: Any, cfg: ScoringConfig, skip_column: str | None = None) -> Any:
    """``ds`` with the scoring stages appended (lazy, streaming), plus ``solver_failures``.

    Rows where ``skip_column`` is true are passed through unscored (their score columns null).
    """
    from s1ray.resources import Resources, fit_here, map_pool

    stages = _stages(cfg)
    judge = cfg.difficulty.judge if cfg.difficulty.enabled else None
    pools = {name: Resources.of(p) for name, _, _, p in stages}
    # A solver on Ray Data LLM runs its judge as a pool of its own: it is declared (and fitted) too.
    judged = {name for name, _, _, p in stages if name.startswith("solver:") and judge is not None and _on_llm(p)}
    pools.update({f"{name} judge": Resources.of(judge) for name in judged})
    fitted = fit_here(pools)
    for name, cls, kwargs, pool in stages:
        if _on_llm(pool):
            judge_cpus = fitted[f"{name} judge"].num_cpus if name in judged else None
            ds = _llm_stage(ds, name, cfg, kwargs, skip_column, fitted[name].num_cpus, judge_cpus)
            continue
        ds = map_pool(ds, ArrowStage, fitted[name], batch_size=pool.batch_size, batch_format="pyarrow",
                      constructor_kwargs={"fn": cls, "kwargs": kwargs, "skip_column": skip_column})
        if name == "domains" and cfg.domains.method == "embedding" and cfg.domains.refine_clusters > 0:
            ds = refine_domains_dataset(ds, cfg.domains, skip_column)
    names = [s.name for s in cfg.difficulty.solvers] if cfg.difficulty.enabled else []
    return ds.map_batches(ArrowStage(add_failures, {"solver_names": names}, skip_column=skip_column, construct=False),
                          batch_format="pyarrow", num_cpus=LIGHT_CPUS)


def _on_llm(pool: Any) -> bool:
    """Model stages whose backend runs on Ray Data LLM (vllm, openai); hf keeps its actor pool."""
    return isinstance(pool, GenerationConfig) and uses_batch_llm(pool)


def _llm_stage(ds: Any, name: str, cfg: ScoringConfig, kwargs: dict[str, Any], skip_column: str | None,
               num_cpus: float, judge_cpus: float | None) -> Any:
    if name == "traces":
        return llm_traces(ds, cfg.traces, skip_column, num_cpus)
    if name == "domains":
        return llm_domains(ds, cfg.domains, skip_column, num_cpus)
    if name.startswith("solver:"):
        return llm_solver(ds, cfg.difficulty, kwargs["solver"], skip_column, num_cpus, judge_cpus)
    raise ValueError(f"scoring stage {name!r} has no Ray Data LLM path")


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

def score_curated(ds: Any, cfg: Any) -> Any:
    """The ``scoring`` stage of ``s1ray curate``: model stages on the rows the rules keep only
    (no teacher or solver time on duplicates and contaminated rows); dropped rows get nulls."""
    from s1ray.curate.stage import DROPPED_EARLIER

    # A light task: at the default 1 CPU it would wait behind the model pools on a small machine,
    # and no scored block would reach the driver (or its resume checkpoint) before the end.
    return score_dataset(ds, cfg.scoring, skip_column=DROPPED_EARLIER).drop_columns([DROPPED_EARLIER],
                                                                                  num_cpus=LIGHT_CPUS)


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


def row_local(cfg: Any) -> bool:
    """Each row's scores depend on that row only, except k-means refinement over every embedding."""
    d = cfg.scoring.domains
    return not (d.enabled and d.method == "embedding" and d.refine_clusters > 0)


# Optional (absent = rule stages only); runs on kept rows only. Columns: SCORE_COLUMN_DOCS
# (solver columns are named after the solvers, so they are not listed one by one).
STAGE = Stage("scoring", ScoringConfig, score_curated, drop_reasons, depends_on=("scoring",),
              verdicts=("traces", "difficulty"), optional=True, kept_rows_only=True, resumable=row_local)
