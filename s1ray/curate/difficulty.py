"""Difficulty, as in s1: solver models attempt every question; questions they solve are easy.

Scoring and filtering are separate steps. :class:`SolverAttempts` (one actor pool per
solver) adds ``solver_<name>_correct`` (True / False / null = no gradable answer),
``solver_<name>_extracted``, ``solver_<name>_reason`` and ``solver_<name>_tokens``;
:func:`add_failures` counts ``solver_failures`` / ``solver_solved``; :func:`difficulty_keep`
decides which rows the filter keeps (``any``: drop a question any solver solved — s1's rule;
``all``: drop only those every solver solved; ``threshold``: drop when the solved fraction
reaches ``threshold``; ``none``: keep all, scores only).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
import pandas as pd

from s1ray.config import StrictModel
from s1ray.curate.traces import format_question, is_null, row_choices
from s1ray.models.generation import GenerationConfig

SOLVER_PROMPT = "Solve the following problem. Put the final answer in \\boxed{{}}.\n\n{question}"
CHOICE_PROMPT = ("Answer the following multiple-choice question. Put the letter of the correct option "
                 "in \\boxed{{}}.\n\n{question}")


class SolverConfig(StrictModel):
    name: str  # column suffix: solver_<name>_correct
    generation: GenerationConfig
    prompt: str = SOLVER_PROMPT
    choice_prompt: str = CHOICE_PROMPT


class DifficultyConfig(StrictModel):
    enabled: bool = True
    solvers: list[SolverConfig] = []  # s1: Qwen2.5-7B-Instruct and Qwen2.5-32B-Instruct
    judge: GenerationConfig | None = None  # optional LLM judge (s1: Claude 3.5 Sonnet, Yes/No)
    judge_mode: Literal["fallback", "always"] = "fallback"  # fallback: only when rules give no verdict
    filter: Literal["any", "all", "threshold", "none"] = "any"
    threshold: float = 0.5  # for filter=threshold: drop when solved fraction >= threshold
    # A solver attempt that cannot be graded (no reference, no answer found, generation error):
    # "unsolved" counts it as not solved (the question may stay as hard); "drop" drops the question,
    # as s1 did (its featurization left the grade missing and filter.ipynb drops rows with any
    # missing feature).
    ungraded: Literal["unsolved", "drop"] = "unsolved"
    keep_responses: bool = False  # also store solver_<name>_response (large)


def _safe_name(name: str) -> str:
    clean = re.sub(r"[^0-9A-Za-z_]", "_", name)
    if not clean:
        raise ValueError(f"solver name {name!r} has no usable characters")
    return clean


def correct_column(name: str) -> str:
    return f"solver_{_safe_name(name)}_correct"


class SolverAttempts:
    """Ray Data callable class: one solver answers every question; each answer is graded."""

    def __init__(self, solver: SolverConfig, judge: GenerationConfig | None = None,
                 judge_mode: str = "fallback", keep_responses: bool = False,
                 generator: Any = None, judge_generator: Any = None):
        from s1ray.models.generation import make_generator

        self.solver = solver
        self.prefix = f"solver_{_safe_name(solver.name)}"
        self.gen = generator if generator is not None else make_generator(solver.generation)
        self.judge = judge_generator if judge_generator is not None else (
            make_generator(judge) if judge is not None else None)
        self.judge_mode = judge_mode
        self.keep_responses = keep_responses

    def prompt(self, question: Any, choices: list[str] | None) -> str:
        return solver_prompt(self.gen, self.solver, question, choices)

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        from s1ray.grading import judge_grade

        n = len(df)
        choices = [row_choices(df, i) for i in range(n)]
        outs = self.gen.generate([self.prompt(df["question"].iat[i], choices[i]) for i in range(n)])
        correct, extracted, reasons, errors = rule_grades(df, outs)
        if self.judge is not None:
            for i in np.flatnonzero(judge_wanted(df, outs, correct, self.judge_mode)):
                jg = judge_grade(str(df["question"].iat[i]), outs[i].text, str(df["answer"].iat[i]), self.judge)
                correct[i], reasons[i], errors[i] = with_judgement(correct[i], reasons[i], errors[i], jg)
        return solver_columns(df, self.prefix, outs, correct, extracted, reasons, errors, self.keep_responses)


def solver_prompt(gen: Any, solver: SolverConfig, question: Any, choices: list[str] | None) -> str:
    """The solver's chat prompt (``gen`` renders the model's chat template)."""
    template = solver.choice_prompt if choices else solver.prompt
    return gen.chat_prompt(template.format(question=format_question(question, choices)))


def rule_grades(df: pd.DataFrame, outs: list[Any]) -> tuple[list, list, list, list]:
    """(correct, extracted, reason, error) per row: rule-based grading of each solver generation."""
    from s1ray.grading import grade

    refs = list(df["answer"]) if "answer" in df.columns else [None] * len(df)
    correct, extracted, reasons, errors = [], [], [], []
    for i, g in enumerate(outs):
        ref = None if is_null(refs[i]) else refs[i]
        err = None
        if g.finish_reason == "error":
            res_c, res_x, res_r, err = None, None, f"generation error: {g.error}", str(g.error)
        elif ref is None:
            res_c, res_x, res_r = None, None, "no reference answer"
        else:
            gr = grade(g.text, str(ref), choices=row_choices(df, i))
            res_c, res_x, res_r = gr.correct, gr.extracted, gr.reason
        correct.append(res_c)
        extracted.append(res_x)
        reasons.append(res_r)
        errors.append(err)
    return correct, extracted, reasons, errors


def judge_wanted(df: pd.DataFrame, outs: list[Any], correct: list, judge_mode: str) -> np.ndarray:
    """Rows the LLM judge grades: a generated answer and a reference, and (fallback) no rule verdict."""
    refs = list(df["answer"]) if "answer" in df.columns else [None] * len(df)
    return np.array([g is not None and g.finish_reason != "error" and not is_null(refs[i])
                     and (judge_mode == "always" or correct[i] is None)
                     for i, g in enumerate(outs)], dtype=bool)


def with_judgement(correct: Any, reason: Any, error: Any, jg: Any) -> tuple[Any, Any, Any]:
    """A judge's verdict overrides the rule grade; a failed judge call is recorded as the row's error."""
    if jg.correct is not None:
        return jg.correct, f"{jg.reason} ({reason})", error
    if str(jg.reason).startswith("judge failed"):
        return correct, reason, error or jg.reason
    return correct, reason, error


def solver_columns(df: pd.DataFrame, prefix: str, outs: list[Any], correct: list, extracted: list, reasons: list,
                   errors: list, keep_responses: bool) -> pd.DataFrame:
    out = df.copy()
    out[f"{prefix}_correct"] = pd.array(correct, dtype="boolean")
    out[f"{prefix}_extracted"] = extracted
    out[f"{prefix}_reason"] = reasons
    out[f"{prefix}_tokens"] = np.array([g.n_tokens for g in outs], dtype=np.int64)
    out[f"{prefix}_error"] = errors
    if keep_responses:
        out[f"{prefix}_response"] = [g.text for g in outs]
    return out


def add_failures(df: pd.DataFrame, solver_names: list[str]) -> pd.DataFrame:
    """``solver_solved`` (graded correct) and ``solver_failures`` (wrong or no gradable answer)."""
    out = df.copy()
    if not solver_names:
        out["solver_solved"] = np.zeros(len(df), dtype=np.int64)
        out["solver_failures"] = np.zeros(len(df), dtype=np.int64)
        return out
    solved = np.stack([df[correct_column(s)].astype("boolean").fillna(False).to_numpy(dtype=bool)
                       for s in solver_names], axis=1)
    out["solver_solved"] = solved.sum(axis=1).astype(np.int64)
    out["solver_failures"] = (len(solver_names) - solved.sum(axis=1)).astype(np.int64)
    return out


def _ungraded(df: pd.DataFrame, cfg: DifficultyConfig) -> np.ndarray:
    """Per row: how many solvers gave no gradable attempt (``solver_<name>_correct`` null)."""
    cols = [correct_column(s.name) for s in cfg.solvers]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"difficulty filter needs the solver grade column(s) {missing}; run the difficulty scoring")
    return np.stack([df[c].astype("boolean").isna().to_numpy(dtype=bool) for c in cols], axis=1).sum(axis=1)


def difficulty_keep(df: pd.DataFrame, cfg: DifficultyConfig) -> np.ndarray:
    """Rows the difficulty filter keeps (the scores must already be there)."""
    n_solvers = len(cfg.solvers)
    if cfg.filter == "none" or n_solvers == 0:
        return np.ones(len(df), dtype=bool)
    solved = df["solver_solved"].to_numpy(dtype=np.int64)
    if cfg.filter == "any":
        keep = solved == 0
    elif cfg.filter == "all":
        keep = solved < n_solvers
    else:
        keep = solved / n_solvers < cfg.threshold
    if cfg.ungraded == "drop":
        keep &= _ungraded(df, cfg) == 0
    return keep


def difficulty_reason(df: pd.DataFrame, cfg: DifficultyConfig) -> list[str | None]:
    """Why a row is dropped (None = kept), for the funnel report: ``too_easy`` first, then ``ungraded``."""
    keep = difficulty_keep(df, cfg)
    solved = df["solver_solved"].to_numpy() if "solver_solved" in df.columns else np.zeros(len(df))
    easy = ~difficulty_keep(df, cfg.model_copy(update={"ungraded": "unsolved"}))
    ungraded = _ungraded(df, cfg) if cfg.ungraded == "drop" and not keep.all() else np.zeros(len(df), np.int64)
    n = len(cfg.solvers)
    return [None if k else
            f"too_easy: solved by {int(s)}/{n} solver(s) (filter={cfg.filter})" if e else
            f"ungraded: {int(u)}/{n} solver(s) gave no gradable attempt (ungraded=drop)"
            for k, e, s, u in zip(keep, easy, solved, ungraded)]
