"""Benchmark loaders: AIME24, MATH-500, GPQA Diamond, AMC23, or any JSONL with a field mapping.

Each benchmark is read through :func:`s1ray.io.readers.read_source` (local file, saved dataset
folder or hub id), so bad rows are quarantined with file and row like every other source.
A question becomes ``{"id", "benchmark", "question", "answer", "choices", "kind"}``.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

from s1ray.answers import choice_letter
from s1ray.evaluate.config import BenchmarkConfig
from s1ray.io.readers import SourceConfig, SourceError, iter_raw_rows, quarantine_row, read_source

# name -> defaults: hub id/config/split, canonical field -> column, preset, grading kind
KNOWN: dict[str, dict[str, Any]] = {
    "math500": dict(hub_id="HuggingFaceH4/MATH-500", split="test", preset="math", kind="math",
                    columns={"question": "problem", "answer": "answer", "solution": "solution"}),
    "aime24": dict(hub_id="simplescaling/aime24_nofigures", split="train", preset="generic", kind="math",
                   columns={"question": "problem", "answer": "answer", "solution": "solution"}),
    "amc23": dict(hub_id="math-ai/amc23", split="test", preset="generic", kind="math",
                  columns={"question": "question", "answer": "answer"}),
    "gpqa_diamond": dict(hub_id="Idavidrein/gpqa", hub_config="gpqa_diamond", split="train", preset="generic",
                         kind="choice", columns={"question": "Question"}),
    "jsonl": dict(hub_id=None, split="train", preset="generic", kind="auto",
                  columns={"question": "question", "answer": "answer"}),
}

GPQA_CORRECT = "Correct Answer"
GPQA_WRONG = ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")


@dataclass
class Benchmark:
    name: str
    questions: list[dict[str, Any]]
    n_rows: int = 0
    quarantined: list[dict[str, Any]] = field(default_factory=list)


def _clean_answer(answer: str | None) -> str | None:
    """AMC23 stores answers as floats (27.0): an integral float is written as an integer."""
    if answer is None:
        return None
    a = answer.strip()
    try:
        f = float(a)
    except ValueError:
        return a
    return str(int(f)) if f.is_integer() and "." in a else a


def _source_config(b: BenchmarkConfig) -> SourceConfig:
    d = KNOWN[b.name]
    columns = {**d["columns"], **b.columns}
    if b.path and b.name in ("aime24", "amc23") and "question" not in b.columns:
        columns["question"] = "problem"  # the local files hold both; problem is the original text
    return SourceConfig(
        name=b.display, path=b.path, hub_id=None if b.path else (b.hub_id or d["hub_id"]),
        hub_config=b.hub_config or d.get("hub_config"), split=b.split or d["split"],
        preset=d["preset"],
        columns={k: v for k, v in columns.items() if k != "id"}, limit=b.limit)


def _gpqa_rows(b: BenchmarkConfig) -> Benchmark:
    """GPQA keeps the right answer in its own column; options are shuffled per question (seeded)."""
    spec = _source_config(b)
    label, rows = iter_raw_rows(spec)
    bench = Benchmark(b.display, [])
    for rowno, obj, raw in rows:
        if b.limit is not None and bench.n_rows >= b.limit:
            break
        bench.n_rows += 1
        if not isinstance(obj, dict):
            bench.quarantined.append(quarantine_row(b.display, label, rowno, str(obj), raw))
            continue
        question = obj.get(spec.columns.get("question", "Question"))
        options = [obj.get(GPQA_CORRECT)] + [obj.get(c) for c in GPQA_WRONG]
        if not question or any(not isinstance(o, str) or not o.strip() for o in options):
            bench.quarantined.append(quarantine_row(b.display, label, rowno,
                                                    "missing question or one of the four options", raw))
            continue
        options = [o.strip() for o in options]
        rng = random.Random(f"{b.shuffle_seed}:{question}")
        order = list(range(4))
        rng.shuffle(order)
        choices = [options[k] for k in order]
        bench.questions.append(_question(b, str(question), choice_letter(order.index(0)), choices, "choice",
                                         f"{label}:{rowno}"))
    return bench


def _question(b: BenchmarkConfig, question: str, answer: str, choices: list[str] | None, kind: str,
              origin: str) -> dict[str, Any]:
    qid = hashlib.sha1(question.encode("utf-8")).hexdigest()[:12]
    return {"id": f"{b.display}/{qid}", "benchmark": b.display, "question": question, "answer": answer,
            "choices": choices, "kind": kind, "origin": origin}


def load_benchmark(b: BenchmarkConfig) -> Benchmark:
    """Read one benchmark; rows without a question or reference answer are quarantined."""
    if b.name == "gpqa_diamond" and not b.columns.get("choices"):
        return _gpqa_rows(b)
    spec = _source_config(b)
    result = read_source(spec)
    bench = Benchmark(b.display, [], n_rows=result.n_rows, quarantined=list(result.quarantined))
    kind_default = b.kind if b.kind != "auto" else KNOWN[b.name]["kind"]
    for rec in result.records:
        answer = _clean_answer(rec["answer"])
        if not answer:
            bench.quarantined.append(quarantine_row(b.display, spec.path or spec.hub_id or "", rec["origin"],
                                                    "no reference answer", rec["question"]))
            continue
        choices = rec["choices"]
        kind = kind_default if kind_default != "auto" else ("choice" if choices else "math")
        bench.questions.append(_question(b, rec["question"], answer, choices, kind, rec["origin"]))
    if not bench.questions:
        raise SourceError(f"benchmark {b.display!r}: no usable questions "
                          f"({len(bench.quarantined)} quarantined, e.g. {json.dumps(bench.quarantined[:1])[:300]})")
    return bench


def format_question(q: dict[str, Any], math_instruction: str, choice_instruction: str) -> str:
    """The user message: the question, lettered options for multiple choice, and the instruction."""
    if q["kind"] == "choice" and q.get("choices"):
        options = "\n".join(f"{choice_letter(i)}) {c}" for i, c in enumerate(q["choices"]))
        return f"{q['question']}\n\n{options}\n\n{choice_instruction}".strip()
    return f"{q['question']}\n\n{math_instruction}".strip()
