"""Schemas of known datasets, mapped onto the canonical record.

A preset is a default column mapping (canonical field -> source column) plus how the
reference answer is derived. ``SourceConfig.columns`` overrides single entries, so a
dataset that is "MATH but with the question in `prompt`" needs one line of config.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from s1ray.answers import choice_letter, gsm8k_answer, last_boxed
from s1ray.records import make_record

if TYPE_CHECKING:
    from s1ray.io.readers import SourceConfig


class RowError(ValueError):
    """A row that cannot become a record; the message is the quarantine reason."""


FIELDS = ("question", "solution", "answer", "choices", "thinking", "attempt", "attempt_correct",
          "cot_type", "source_type", "domain")


@dataclass(frozen=True)
class Preset:
    columns: dict[str, str | list[str]]  # canonical -> source column (a list: several traces)
    answer_from: str = "field"  # field | boxed | gsm8k
    prepare: Callable[[dict[str, Any], "SourceConfig"], dict[str, Any]] | None = None
    extra_metadata: tuple[str, ...] = field(default=())

    def __call__(self, row: dict[str, Any], spec: "SourceConfig", origin: str) -> dict[str, Any]:
        if self.prepare is not None:
            row = self.prepare(row, spec)
        columns: dict[str, Any] = {**self.columns, **spec.columns}
        unknown = set(spec.columns) - set(FIELDS)
        if unknown:
            raise RowError(f"config maps unknown canonical field(s) {sorted(unknown)}")
        values: dict[str, Any] = {}
        used: set[str] = set()
        for canon, col in columns.items():
            if isinstance(col, list):
                present = [row.get(c) for c in col if row.get(c) is not None]
                values[canon] = present or None
                used.update(col)
            else:
                values[canon] = row.get(col)
                used.add(col)
        return _validate(values, row, used, spec, origin, spec.answer_from or self.answer_from)


def _text(name: str, value: Any, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise RowError(f"missing {name}")
        return None
    if isinstance(value, bool):
        raise RowError(f"{name} is a bool, not text")
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise RowError(f"{name} is a {type(value).__name__}, not text")
    if required and not value.strip():
        raise RowError(f"empty {name}")
    return value


def _text_list(name: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value] if value.strip() else None
    if hasattr(value, "tolist"):  # numpy arrays from parquet/pandas
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise RowError(f"{name} is a {type(value).__name__}, not a list of strings")
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise RowError(f"{name}[{i}] is a {type(v).__name__}, not text")
        out.append(str(v))
    return out or None


def _bool(name: str, value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "true", "correct", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("no", "false", "incorrect", "0"):
        return False
    raise RowError(f"{name} is {value!r}, not a yes/no grade")


def _validate(values: dict[str, Any], row: dict[str, Any], used: set[str], spec: "SourceConfig",
              origin: str, answer_from: str) -> dict[str, Any]:
    question = _text("question", values.get("question"), required=True)
    assert question is not None
    if len(question) > spec.max_chars:
        raise RowError(f"absurd length: question has {len(question)} chars > max_chars={spec.max_chars}")
    if "\ufffd" in question:
        raise RowError("question holds U+FFFD replacement characters (mis-decoded text)")
    solution = _text("solution", values.get("solution"))
    answer = _text("answer", values.get("answer"))
    choices = _text_list("choices", values.get("choices"))
    if choices and answer is not None and answer.strip().lstrip("-").isdigit():
        idx = int(answer)
        if not 0 <= idx < len(choices):
            raise RowError(f"answer index {idx} out of range for {len(choices)} choices")
        answer = choice_letter(idx)
    if answer_from == "boxed" and not answer:
        answer = last_boxed(solution)
    elif answer_from == "gsm8k":
        answer = gsm8k_answer(solution) if answer is None or answer == solution else answer
    metadata = {k: v for k, v in row.items() if k not in used}
    return make_record(
        source=spec.name,
        source_type=_text("source_type", values.get("source_type")),
        origin=origin,
        question=question,
        solution=solution,
        answer=answer,
        choices=choices,
        cot_type=_text("cot_type", values.get("cot_type")),
        thinking=_text_list("thinking", values.get("thinking")),
        attempt=_text("attempt", values.get("attempt")),
        attempt_correct=_bool("attempt_correct", values.get("attempt_correct")),
        domain=_text("domain", values.get("domain")),
        metadata=metadata,
    )


# --- dataset-specific preparation ---------------------------------------------------------

# s1's data/fix_gpqa.py: a GPQA question ends with its options, its solution with the letter.
_GPQA_OPTIONS = re.compile(r"\nAnswer Choices:\n\(A\) (.*?)\n\(B\) (.*?)\n\(C\) (.*?)\n\(D\) (.*)\Z", re.S)
_GPQA_LETTER = re.compile(r"Answer:\s*\(?([A-D])\)?\s*\Z")


def _s1k_prepare(row: dict[str, Any], spec: "SourceConfig") -> dict[str, Any]:
    """s1K: the reference `solution` is often just the answer; its metadata is a dict repr.

    GPQA rows carry their answer differently: in s1K (after s1's data/fix_gpqa.py) the question
    ends with "Answer Choices:\n(A) ...(D) ..." and the solution with "Answer: <letter>", so the
    letter is the answer and the options become ``choices`` (graded as multiple choice); in the
    59K pool (before that fix) the metadata's "Correct Answer" text is the answer.
    """
    row = dict(row)
    meta = row.get("metadata")
    if isinstance(meta, str):
        try:
            row["metadata"] = json.loads(meta)
        except json.JSONDecodeError:
            try:
                row["metadata"] = ast.literal_eval(meta)
            except (ValueError, SyntaxError):
                pass
    sol, question = row.get("solution"), row.get("question")
    if "answer" not in row and isinstance(sol, str) and isinstance(question, str):
        letter, options = _GPQA_LETTER.search(sol.strip()), _GPQA_OPTIONS.search(question)
        if letter and options:
            row["answer"] = letter.group(1)
            row.setdefault("choices", [o.strip() for o in options.groups()])
        elif "gpqa" in str(row.get("source_type") or "").lower() and isinstance(row.get("metadata"), dict):
            correct = row["metadata"].get("Correct Answer")
            if isinstance(correct, str) and correct.strip():
                row["answer"] = correct.strip()
    if isinstance(sol, str) and "answer" not in row:
        row["answer"] = last_boxed(sol) or (sol.strip() if len(sol) <= 200 else None)
    return row


def _s1k11_prepare(row: dict[str, Any], spec: "SourceConfig") -> dict[str, Any]:
    row = _s1k_prepare(row, spec)
    first, second = ("deepseek", "gemini") if spec.teacher == "deepseek" else ("gemini", "deepseek")
    # The chosen teacher's fields become columns; the other teacher's trace, attempt and grades
    # stay in metadata. Only the chosen teacher's trace is `thinking`: s1's format joins every
    # trace of a row (data/tokenization.py), and s1.1 trained on one teacher's.
    trace = row.pop(f"{first}_thinking_trajectory", None)
    row["_thinking"] = [trace] if trace else []
    row["_attempt"] = row.pop(f"{first}_attempt", None)
    row["_grade"] = row.pop(f"{first}_grade", None)
    return row


def _olympiad_prepare(row: dict[str, Any], spec: "SourceConfig") -> dict[str, Any]:
    row = dict(row)
    if row.get("context"):
        row["question"] = f"{row['context']}\n\n{row.get('question') or ''}".strip()
    for key, joiner in (("solution", "\n\n"), ("final_answer", ", ")):
        if isinstance(row.get(key), list):
            row[key] = joiner.join(str(s) for s in row[key])
    return row


PRESETS: dict[str, Preset] = {
    "generic": Preset(columns={f: f for f in FIELDS}),
    "s1k": Preset(
        columns={"question": "question", "solution": "solution", "answer": "answer", "choices": "choices",
                 "thinking": "thinking_trajectories", "attempt": "attempt", "cot_type": "cot_type",
                 "source_type": "source_type"},
        prepare=_s1k_prepare,
    ),
    "s1k-1.1": Preset(
        columns={"question": "question", "solution": "solution", "answer": "answer", "choices": "choices",
                 "thinking": "_thinking", "attempt": "_attempt", "attempt_correct": "_grade",
                 "cot_type": "cot_type", "source_type": "source_type"},
        prepare=_s1k11_prepare,
    ),
    "math": Preset(columns={"question": "problem", "solution": "solution", "answer": "answer"},
                   answer_from="boxed"),
    "gsm8k": Preset(columns={"question": "question", "solution": "answer"}, answer_from="gsm8k"),
    "olympiadbench": Preset(
        columns={"question": "question", "solution": "solution", "answer": "final_answer"},
        prepare=_olympiad_prepare,
    ),
    "multiple_choice": Preset(columns={"question": "question", "choices": "choices", "answer": "answer"}),
}
