"""The canonical question record every stage reads and extends.

Readers map each source's own schema onto these columns. Later stages only *add* columns
(scores, flags, grades); they never rewrite the ones below, so any stage's output still
holds the original record.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

import pyarrow as pa

# Column -> Arrow type. ``thinking`` is a list because some sources carry several traces
# (s1K-1.1: DeepSeek and Gemini); index 0 is the preferred one. ``metadata`` is a JSON string
# so heterogeneous per-source extras never break a shared Arrow schema.
SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # hash of the normalized question text
        ("source", pa.string()),  # the configured source name
        ("source_type", pa.string()),  # per-row origin dataset (s1K's source_type), else = source
        ("origin", pa.string()),  # "file:line" (or "hub-id:row") for traceability
        ("question", pa.string()),
        ("solution", pa.string()),  # reference worked solution
        ("answer", pa.string()),  # reference final answer
        ("choices", pa.list_(pa.string())),  # multiple choice options, else null
        ("cot_type", pa.string()),  # math / science / crossword ... when known
        ("thinking", pa.list_(pa.string())),  # teacher reasoning trace(s)
        ("attempt", pa.string()),  # teacher's final response
        ("attempt_correct", pa.bool_()),  # teacher attempt graded correct, when known
        ("domain", pa.string()),  # MSC code, when known
        ("metadata", pa.string()),  # JSON object with everything else
    ]
)
COLUMNS = SCHEMA.names

_LATEX_SPACING = re.compile(r"\\(?:[,;:! ]|quad|qquad|enspace|thinspace|medspace|thickspace)")
_LATEX_SIZING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])")
_SPACE = re.compile(r"\s+")
# Spaces next to math punctuation carry no meaning: "x + 1" == "x+1".
# Removed with a literal "" replacement (lookarounds, no group): ~2x faster than "\1" per match.
_SPACE_AROUND_OPS = re.compile(r"\s+(?=[=+\-*/^_{}()\[\],$<>|])|(?<=[=+\-*/^_{}()\[\],$<>|])\s+")


def normalize_text(text: str) -> str:
    """Normalization used for ids, exact dedup and exact-match decontamination.

    Case, whitespace, LaTeX spacing/sizing commands and spaces around operators are
    dropped; digits and symbols are kept, because in math they are the content.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _LATEX_SPACING.sub(" ", text)
    text = _LATEX_SIZING.sub("", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _SPACE.sub(" ", text).strip()
    text = _SPACE_AROUND_OPS.sub("", text)
    return text.rstrip(".")


def question_id(question: str) -> str:
    return hashlib.sha1(normalize_text(question).encode("utf-8")).hexdigest()[:16]


def make_record(
    *,
    source: str,
    question: str,
    origin: str,
    source_type: str | None = None,
    solution: str | None = None,
    answer: str | None = None,
    choices: list[str] | None = None,
    cot_type: str | None = None,
    thinking: list[str] | None = None,
    attempt: str | None = None,
    attempt_correct: bool | None = None,
    domain: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": question_id(question),
        "source": source,
        "source_type": source_type or source,
        "origin": origin,
        "question": question,
        "solution": solution,
        "answer": answer,
        "choices": choices,
        "cot_type": cot_type,
        "thinking": thinking,
        "attempt": attempt,
        "attempt_correct": attempt_correct,
        "domain": domain,
        "metadata": json.dumps(metadata or {}, ensure_ascii=False, default=str),
    }


def to_table(records: list[dict[str, Any]]) -> pa.Table:
    """Records -> Arrow table with the canonical schema (column order fixed); missing keys are
    null. Built column by column: ~2x faster than ``Table.from_pylist`` (it runs per read shard)."""
    return pa.Table.from_arrays([pa.array([r.get(f.name) for r in records], f.type) for f in SCHEMA], schema=SCHEMA)


def primary_thinking(row: dict[str, Any]) -> str:
    """The preferred reasoning trace of a row, or ''."""
    traces = row.get("thinking")
    if traces is None:
        return ""
    traces = list(traces)
    return traces[0] if traces and traces[0] else ""
