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

from s1ray.config import StrictModel

TEACHER_PROMPT = (
    "Solve the following problem. Think step by step first, then write a line starting with "
    "\"Final Answer:\" and give the final answer in \\boxed{{}}.\n\n{question}"
)
_ANSWER_MARKERS = re.compile(r"(\*\*\s*final answer\s*\*\*|final answer\s*:|answer\s*:)", re.IGNORECASE)


class TracesConfig(StrictModel):
    """Which rows get a teacher trace and how hard to try."""

    enabled: bool = True
    max_attempts: int = 2  # generations per row before it is quarantined
    retry_temperature: float = 0.7  # later attempts sample, so a retry can differ
    min_thinking_chars: int = 20  # shorter "thinking" counts as a failed generation
    prompt: str = TEACHER_PROMPT


def _first_trace(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
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

    def __init__(self, gen_cfg: Any, cfg: TracesConfig, generator: Any = None):
        from s1ray.models.generation import make_generator

        self.cfg = cfg
        self.gen_cfg = gen_cfg
        self.gen = generator if generator is not None else make_generator(gen_cfg)

    def _generate(self, questions: list[str], temperature: float | None) -> list[Any]:
        prompts = [self.gen.chat_prompt(self.cfg.prompt.format(question=q)) for q in questions]
        if temperature is None or not hasattr(self.gen, "cfg"):
            return self.gen.generate(prompts)
        old = self.gen.cfg.temperature
        try:
            self.gen.cfg.temperature = temperature
            return self.gen.generate(prompts)
        finally:
            self.gen.cfg.temperature = old

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        from s1ray.grading import grade

        n = len(df)
        need = ~has_trace(df)
        thinking = [None] * n
        attempt = [None] * n
        error: list[str | None] = [None] * n
        todo = list(np.flatnonzero(need))
        for round_ in range(self.cfg.max_attempts):
            if not todo:
                break
            temp = None if round_ == 0 else self.cfg.retry_temperature
            outs = self._generate([str(df["question"].iat[i]) for i in todo], temp)
            still = []
            for i, g in zip(todo, outs):
                reason = failure_reason(g.text, g.finish_reason, g.error, self.cfg)
                if reason is None:
                    thinking[i], attempt[i] = split_teacher_output(g.text)
                    error[i] = None
                else:
                    error[i] = f"{reason} (after {round_ + 1} attempt(s))"
                    still.append(i)
            todo = still
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
            given = df["attempt_correct"].iat[i] if "attempt_correct" in df.columns else None
            if given is not None and not pd.isna(given):
                correct.append(bool(given))
                continue
            resp, ref = out["trace_attempt"].iat[i], df["answer"].iat[i] if "answer" in df.columns else None
            if not resp or ref is None or pd.isna(ref):
                correct.append(None)
                continue
            choices = df["choices"].iat[i] if "choices" in df.columns else None
            choices = list(choices) if choices is not None and not isinstance(choices, float) else None
            correct.append(grade(str(resp), str(ref), choices=choices or None).correct)
        out["trace_correct"] = pd.array(correct, dtype="boolean")
        return out
