"""Teacher traces: a teacher model writes ``thinking`` and ``attempt`` for rows that lack them.

Original columns are never rewritten. The teacher's output goes to ``teacher_thinking`` /
``teacher_attempt``; ``trace_thinking`` / ``trace_attempt`` hold the resolved trace (the
source's own when present, else the teacher's) and ``trace_source`` says which.
``trace_correct`` grades the resolved attempt (the source's grade when it has one).
Rows whose generation keeps failing get ``trace_error`` and are quarantined by the pipeline.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from pydantic import model_validator

from s1ray.config import StrictModel
from s1ray.models.generation import GenerationConfig

TEACHER_PROMPT = (
    "Solve the following problem. Think step by step first, then write a line starting with "
    "\"Final Answer:\" and give the final answer in \\boxed{{}}.\n\n{question}"
)
_ANSWER_MARKERS = re.compile(r"(\*\*\s*final answer\s*\*\*|final answer\s*:|answer\s*:)", re.IGNORECASE)


class TracesConfig(StrictModel):
    """Which rows get a teacher trace and how hard to try."""

    enabled: bool = False
    teacher: GenerationConfig | None = None  # required when enabled (s1: Gemini / DeepSeek-R1)
    max_attempts: int = 2  # generations per row before it is quarantined
    retry_temperature: float = 0.7  # later attempts sample, so a retry can differ
    min_thinking_chars: int = 20  # shorter "thinking" counts as a failed generation
    prompt: str = TEACHER_PROMPT

    @model_validator(mode="after")
    def _needs_teacher(self) -> "TracesConfig":
        if self.enabled and self.teacher is None:
            raise ValueError("traces.enabled needs a `teacher` generation config")
        return self


def is_null(value: Any) -> bool:
    """None, NaN or pd.NA: what a missing cell looks like after Arrow -> pandas."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def format_question(question: Any, choices: Any = None) -> str:
    """The question as a model sees it: multiple-choice options listed as ``A. ...`` lines.

    A question whose text already lists every option (s1K's GPQA rows end with "Answer Choices:
    (A) ...") is left as it is, so the model never sees the options twice.
    """
    text = str(question)
    if is_null(choices):
        return text
    options = [str(c) for c in list(choices)]
    if not options or all(o.strip() and o.strip() in text for o in options):
        return text
    return text + "\n\n" + "\n".join(f"{'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[i]}. {c}" for i, c in enumerate(options))


def row_choices(df: pd.DataFrame, i: int) -> list[str] | None:
    if "choices" not in df.columns:
        return None
    value = df["choices"].iat[i]
    if is_null(value):
        return None
    out = [str(c) for c in list(value)]
    return out or None


def _first_trace(value: Any) -> str:
    if is_null(value):
        return ""
    if isinstance(value, str):
        return value
    items = list(value)
    return str(items[0]) if items and items[0] else ""


def has_trace(df: pd.DataFrame) -> np.ndarray:
    """Rows whose source already carries a reasoning trace."""
    if "thinking" not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return np.array([bool(_first_trace(v).strip()) for v in df["thinking"]], dtype=bool)


def resolved_thinking(df: pd.DataFrame) -> list[str]:
    """The trace selection and length scoring use: the source's, else the teacher's, else ''."""
    own = [_first_trace(v) for v in df["thinking"]] if "thinking" in df.columns else [""] * len(df)
    if "trace_thinking" in df.columns:
        return [t if isinstance(t, str) and t else o for o, t in zip(own, df["trace_thinking"])]
    return own


def split_teacher_output(text: str) -> tuple[str, str]:
    """(thinking, attempt): the text before the last answer marker, and from the marker on.

    Without a marker the whole text is the thinking and the attempt is its last paragraph,
    so a ``\\boxed{}`` answer at the end is still graded.
    """
    text = (text or "").strip()
    marks = list(_ANSWER_MARKERS.finditer(text))
    if marks:
        m = marks[-1]
        return text[: m.start()].strip(), text[m.start():].strip()
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    return text, (paragraphs[-1].strip() if paragraphs else "")


def teacher_prompt(gen: Any, cfg: TracesConfig, question: str) -> str:
    """The teacher's chat prompt for one (formatted) question; ``gen`` renders the chat template."""
    return gen.chat_prompt(cfg.prompt.format(question=question))


def failure_reason(text: str, finish: str, error: str | None, cfg: TracesConfig) -> str | None:
    """Why a teacher generation is unusable, or None."""
    if error or finish == "error":
        return f"generation error: {error or 'unknown'}"
    if finish == "length":
        return "truncated at max_new_tokens"
    thinking, attempt = split_teacher_output(text)
    if len(thinking.strip()) < cfg.min_thinking_chars:
        return f"thinking shorter than {cfg.min_thinking_chars} chars"
    if not attempt.strip():
        return "no attempt"
    return None


class TeacherTraces:
    """Ray Data callable class (actor pool): teacher traces for rows without one, then grades."""

    def __init__(self, cfg: TracesConfig, generator: Any = None):
        if cfg.teacher is None and generator is None:
            raise ValueError("scoring.traces needs a `teacher` generation config")
        self.cfg = cfg
        self._gen = generator

    @property
    def gen(self) -> Any:
        """The teacher, loaded on first use: a pool that already has traces never loads it."""
        if self._gen is None:
            from s1ray.models.generation import make_generator

            self._gen = make_generator(self.cfg.teacher)
        return self._gen

    def _generate(self, questions: list[str], temperature: float | None) -> list[Any]:
        prompts = [teacher_prompt(self.gen, self.cfg, q) for q in questions]
        if temperature is None or getattr(self.gen, "cfg", None) is None:
            return self.gen.generate(prompts)
        old = self.gen.cfg
        try:  # a retry samples, so it can differ from the failed greedy attempt
            self.gen.cfg = old.model_copy(update={"temperature": temperature, "seed": old.seed + 1})
            return self.gen.generate(prompts)
        finally:
            self.gen.cfg = old

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        n = len(df)
        need = ~has_trace(df)
        thinking: list[str | None] = [None] * n
        attempt: list[str | None] = [None] * n
        error: list[str | None] = [None] * n
        todo = list(np.flatnonzero(need))
        for round_ in range(self.cfg.max_attempts):
            if not todo:
                break
            temp = None if round_ == 0 else self.cfg.retry_temperature
            outs = self._generate([format_question(df["question"].iat[i], row_choices(df, i)) for i in todo], temp)
            still = []
            for i, g in zip(todo, outs):
                thinking[i], attempt[i], error[i] = attempt_outcome(g, self.cfg, round_)
                if error[i] is not None:
                    still.append(i)
            todo = still
        return resolve_traces(df, need, thinking, attempt, error)


def attempt_outcome(g: Any, cfg: TracesConfig, round_: int) -> tuple[str | None, str | None, str | None]:
    """(thinking, attempt, error) of one teacher generation in round ``round_`` (0-based)."""
    reason = failure_reason(g.text, g.finish_reason, g.error, cfg)
    if reason is None:
        thinking, attempt = split_teacher_output(g.text)
        return thinking, attempt, None
    return None, None, f"{reason} (after {round_ + 1} attempt(s))"


def resolve_traces(df: pd.DataFrame, need: np.ndarray, thinking: list, attempt: list, error: list) -> pd.DataFrame:
    """``df`` plus the teacher columns and the resolved trace (source's own, else the teacher's), graded."""
    from s1ray.grading import grade

    n = len(df)
    thinking = [None if is_null(v) else v for v in thinking]
    attempt = [None if is_null(v) else v for v in attempt]
    error = [None if is_null(v) else v for v in error]
    own_think = [_first_trace(v) for v in df["thinking"]] if "thinking" in df.columns else [""] * n
    own_attempt = list(df["attempt"]) if "attempt" in df.columns else [None] * n
    out = df.copy()
    out["teacher_thinking"] = thinking
    out["teacher_attempt"] = attempt
    out["trace_source"] = [("original" if not need[i] else "teacher" if thinking[i] else None) for i in range(n)]
    out["trace_thinking"] = [own_think[i] if not need[i] else thinking[i] for i in range(n)]
    out["trace_attempt"] = [own_attempt[i] if not need[i] else attempt[i] for i in range(n)]
    out["trace_error"] = error
    correct: list[bool | None] = []
    for i in range(n):
        given = df["attempt_correct"].iat[i] if "attempt_correct" in df.columns and not need[i] else None
        if not is_null(given):
            correct.append(bool(given))
            continue
        resp, ref = out["trace_attempt"].iat[i], df["answer"].iat[i] if "answer" in df.columns else None
        if is_null(resp) or not resp or is_null(ref):
            correct.append(None)
            continue
        correct.append(grade(str(resp), str(ref), choices=row_choices(df, i)).correct)
    out["trace_correct"] = pd.array(correct, dtype="boolean")
    return out
