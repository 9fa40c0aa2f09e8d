"""Schemas of known datasets, mapped onto the canonical record.

A preset is a default column mapping (canonical field -> source column) plus how the
reference answer is derived. ``SourceConfig.columns`` overrides single entries, so a
dataset that is "MATH but with the question in `prompt`" needs one line of config.

Common schemas need no code, only configuration:

* options (``choices``) as a list (``["12", "15"]``, AQuA's ``["A)12", "B)15"]``), a mapping
  (``{"A": "12", "B": "15"}``, or ARC's ``{"label": [...], "text": [...]}``), one string
  (``"A) 12 B) 15"``, ``"(a) 12 (b) 15"``, MathQA's ``"a ) 12 , b ) 15"``), or several columns
  (``columns: {choices: [A, B, C, D]}``);
* the answer as a letter, a 0-based index, a 1-based index or the option text
  (``answer_format``; ``auto`` takes a letter, then an integer as a 0-based index, then an
  option's text), always stored as the option letter;
* the question assembled from several columns (``question_template: "{passage}\n\n{question}"``;
  a null column renders empty, an absent one quarantines the row naming it).
"""

from __future__ import annotations

import ast
import json
import math
import re
import string
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from s1ray.answers import choice_letter, gsm8k_answer, last_boxed
from s1ray.records import make_record


class RowError(ValueError):
    """A row that cannot become a record; the message is the quarantine reason."""


FIELDS = ("question", "solution", "answer", "choices", "thinking", "attempt", "attempt_correct",
          "cot_type", "source_type", "domain")


@dataclass(frozen=True)
class Preset:
    columns: dict[str, str | list[str]]  # canonical -> source column (a list: several traces)
    answer_from: str = "field"  # field | boxed | gsm8k
    prepare: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
    extra_metadata: tuple[str, ...] = field(default=())

    def __call__(self, row: dict[str, Any], spec: Any, origin: str) -> dict[str, Any]:
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
        template = getattr(spec, "question_template", None)
        if template:
            values["question"] = render_template(template, row)
            used.update(template_fields(template))
        return _validate(values, row, used, spec, origin, spec.answer_from or self.answer_from)


@lru_cache(maxsize=64)
def template_fields(template: str) -> tuple[str, ...]:
    """The column names a question template uses; ValueError for a template that cannot work."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"question_template {template!r}: {e} (write a literal brace as {{{{ or }}}})") from e
    names = tuple(dict.fromkeys(name for _, name, _, _ in parts if name is not None))
    if not names:
        raise ValueError(f"question_template {template!r} names no column; write e.g. '{{passage}}\\n\\n{{question}}'")
    if "" in names or any(name.isdigit() for name in names):
        raise ValueError(f"question_template {template!r}: every {{}} must name a column, e.g. {{question}}")
    return names


def check_template(template: str | None) -> str | None:
    """Config-time check of ``SourceConfig.question_template`` (raises ValueError)."""
    if template is not None:
        template_fields(template)
    return template


def render_template(template: str, row: dict[str, Any]) -> str:
    """The question text from several columns; null columns render empty, absent ones are an error."""
    out = []
    for literal, name, spec, conv in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        if name not in row:
            raise RowError(f"question_template: column {name!r} is missing from the row "
                           f"(it has {sorted(row)[:12]})")
        value = row[name]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise RowError(f"question_template: column {name!r} is a {type(value).__name__}, not text")
        out.append(format(str(value) if conv in (None, "s") else repr(value), spec or ""))
    text = re.sub(r"\n{3,}", "\n\n", "".join(out)).strip()
    if not text:
        raise RowError(f"empty question: every column of question_template {template!r} is empty")
    return text


def _text(name: str, value: Any, required: bool = False) -> str | None:
    """A text field; numbers become text only where that is what they mean (an answer of 42),
    never for the question, and never NaN/Infinity ("nan" is not an answer)."""
    if value is None:
        if required:
            raise RowError(f"missing {name}")
        return None
    if isinstance(value, bool):
        raise RowError(f"{name} is a bool, not text")
    if isinstance(value, float) and not math.isfinite(value):
        raise RowError(f"{name} is {value} (NaN/Infinity), not text")
    if isinstance(value, (int, float)) and required:
        raise RowError(f"{name} is a number ({str(value)[:40]}), not text")
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


def _validate(values: dict[str, Any], row: dict[str, Any], used: set[str], spec: Any,
              origin: str, answer_from: str) -> dict[str, Any]:
    question = _text("question", values.get("question"), required=True)
    assert question is not None
    if len(question) > spec.max_chars:
        raise RowError(f"absurd length: question has {len(question)} chars > max_chars={spec.max_chars}")
    if "\ufffd" in question:
        raise RowError("question holds U+FFFD replacement characters (mis-decoded text)")
    if "\x00" in question:
        raise RowError("question holds a NUL character (binary data?)")
    _check_unicode({"question": question})  # before the id hashes its UTF-8 bytes
    solution = _text("solution", values.get("solution"))
    answer = _text("answer", values.get("answer"))
    choices = parse_choices(values.get("choices"))
    if choices and answer is not None:
        answer = choice_answer(answer, choices, getattr(spec, "answer_format", "auto"))
    if answer_from == "boxed" and not answer:
        answer = last_boxed(solution)
    elif answer_from == "gsm8k":
        answer = gsm8k_answer(solution) if answer is None or answer == solution else answer
    metadata = {k: v for k, v in row.items() if k not in used}
    return _check_unicode(make_record(
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
    ))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_unicode(record: dict[str, Any]) -> dict[str, Any]:
    """A lone surrogate (JSON's "\\ud800", or bytes that were not UTF-8) cannot be stored as
    UTF-8: it would fail the whole read task later, so the row is refused here."""
    for name, value in record.items():
        for text in (value if isinstance(value, list) else [value]):
            if isinstance(text, str) and not text.isascii() and _SURROGATE.search(text):
                raise RowError(f"{name} holds a lone surrogate {_SURROGATE.search(text).group()!a} "
                               "(invalid Unicode)")
    return record


# --- multiple choice: options in any common shape, answers as letter / index / text -------------

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# An option label: "A)", "(A)", "A.", "A:", "[A]", "a )" at the start or after a space, comma or semicolon.
_LABEL = re.compile(r"(?:^|(?<=[\s,;]))[(\[]?([A-Za-z])\s?[).\]:]\s*")
_ANSWER_LETTER = re.compile(r"^\(?([A-Za-z])\)?[.):]?$")


def _option_text(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError(f"{name} is a {type(value).__name__}, not text")
    return str(value).strip()


def split_labelled(text: str) -> list[str] | None:
    """Options from one string labelled A) B) C) ... (or a) b) ..., (A) (B) ..., A. B. ...).

    Labels must run A, B, C, ... in order and in one case; returns None when fewer than two
    labelled options are found.
    """
    marks = list(_LABEL.finditer(text))
    for start, m in enumerate(marks):
        if m.group(1) not in "Aa":
            continue
        letters = _LETTERS if m.group(1) == "A" else _LETTERS.lower()
        seq = [m]
        for nxt in marks[start + 1:]:
            if len(seq) < len(letters) and nxt.group(1) == letters[len(seq)] and nxt.start() >= seq[-1].end():
                seq.append(nxt)
        if len(seq) >= 2:
            ends = [x.start() for x in seq[1:]] + [len(text)]
            return [text[a.end():b].strip().rstrip(",;").strip() for a, b in zip(seq, ends)]
    return None


def parse_choices(value: Any, name: str = "choices") -> list[str] | None:
    """Options as a list of texts, from a list, a letter mapping, or one labelled string."""
    if value is None:
        return None
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays from parquet/pandas
        value = value.tolist()
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped:
            return None
        if stripped[0] in "[{":
            try:
                return parse_choices(json.loads(stripped), name)
            except json.JSONDecodeError:
                pass
        options = split_labelled(stripped)
        if options is None:
            raise RowError(f"{name} is one string without option labels like 'A) ... B) ...': {stripped[:80]!r}")
        return options
    if isinstance(value, dict):
        if set(value) == {"label", "text"} and isinstance(value["label"], (list, tuple)):  # ARC / CommonsenseQA
            labels, texts = list(value["label"]), list(value["text"])
            if len(labels) != len(texts):
                raise RowError(f"{name}: {len(labels)} labels but {len(texts)} texts")
            value = dict(zip((str(x) for x in labels), texts))
        keys = [str(k).strip().strip("()").upper() for k in value]
        if all(k.isdigit() for k in keys):
            order = sorted(range(len(keys)), key=lambda i: int(keys[i]))
            nums = [int(keys[i]) for i in order]
            if nums != list(range(nums[0], nums[0] + len(nums))) or nums[0] not in (0, 1):
                raise RowError(f"{name}: numbered options {nums} do not run 0.. or 1.. without gaps")
        elif all(len(k) == 1 and k in _LETTERS for k in keys):
            order = sorted(range(len(keys)), key=lambda i: keys[i])
            if "".join(keys[i] for i in order) != _LETTERS[: len(keys)]:
                raise RowError(f"{name}: option letters {sorted(keys)} do not run A, B, C, ... without gaps")
        else:
            raise RowError(f"{name} is a mapping with keys {list(value)[:8]}; expected option letters "
                           "(A, B, ...), numbers, or label/text lists")
        items = list(value.values())
        return [_option_text(f"{name}[{keys[i]}]", items[i]) for i in order] or None
    if not isinstance(value, (list, tuple)):
        raise RowError(f"{name} is a {type(value).__name__}, not a list, a mapping or a string of options")
    options = [_option_text(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if len(options) >= 2:  # AQuA: ["A)21", "B)21.5", ...] -> the labels are not part of the options
        labelled = [_LABEL.match(o) for o in options]
        if all(m and m.group(1).upper() == _LETTERS[i] for i, m in enumerate(labelled)):
            options = [o[m.end():].strip() for o, m in zip(options, labelled)]
    return options or None


def _norm_option(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold().rstrip(".")


def choice_answer(answer: str, choices: list[str], answer_format: str = "auto") -> str:
    """The option letter that ``answer`` names, given as a letter, an index or the option text."""
    a = answer.strip()
    n = len(choices)
    letter = _ANSWER_LETTER.match(a)
    if answer_format in ("letter", "auto") and letter and letter.group(1).upper() in _LETTERS[:n]:
        return letter.group(1).upper()
    if answer_format == "letter":
        raise RowError(f"answer {answer!r} is not an option letter A-{_LETTERS[n - 1]} ({n} choices)")
    number = re.fullmatch(r"-?\d+(?:\.0+)?", a)
    if answer_format in ("index", "index1", "auto") and number:
        idx = int(float(a)) - (1 if answer_format == "index1" else 0)
        if not 0 <= idx < n:
            raise RowError(f"answer index {a} out of range for {n} choices"
                           + (" (answer_format: index1 counts from 1)" if answer_format == "index1" else ""))
        return choice_letter(idx)
    if answer_format in ("index", "index1"):
        raise RowError(f"answer {answer!r} is not an option index ({n} choices)")
    matches = [i for i, c in enumerate(choices) if _norm_option(c) == _norm_option(a)]
    if matches:
        return choice_letter(matches[0])
    if answer_format == "text":
        raise RowError(f"answer {answer[:80]!r} is not the text of any of the {n} choices")
    raise RowError(f"answer {answer[:80]!r} is neither an option letter, an index nor the text of one of the "
                   f"{n} choices; set answer_format")


# --- dataset-specific preparation ---------------------------------------------------------

# s1's data/fix_gpqa.py: a GPQA question ends with its options, its solution with the letter.
_GPQA_OPTIONS = re.compile(r"\nAnswer Choices:\n\(A\) (.*?)\n\(B\) (.*?)\n\(C\) (.*?)\n\(D\) (.*)\Z", re.S)
_GPQA_LETTER = re.compile(r"Answer:\s*\(?([A-D])\)?\s*\Z")


def _s1k_prepare(row: dict[str, Any], spec: Any) -> dict[str, Any]:
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


def _s1k11_prepare(row: dict[str, Any], spec: Any) -> dict[str, Any]:
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


def _olympiad_prepare(row: dict[str, Any], spec: Any) -> dict[str, Any]:
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
