"""Grade a model response against a reference answer: math-verify, choice letters, or an LLM judge.

``correct=None`` means no verdict: nothing answer-like could be extracted or parsed (or the
check timed out). Callers count those separately from wrong answers.

math-verify's own timeouts use ``signal.alarm``, which raises outside the main thread (Ray
Data actors, thread pools). We always call it with its timeouts off and enforce our own:
``signal.setitimer`` on the main thread (interrupts the work), a watchdog thread elsewhere
(the verdict is given up on time; the abandoned computation finishes in a daemon thread).
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable, Literal, TypeVar

from s1ray.answers import choice_letter, last_boxed

log = logging.getLogger(__name__)
T = TypeVar("T")

TIMEOUT_S = 5.0  # per parse / verify call
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class Grade:
    correct: bool | None  # None = no answer could be extracted/parsed
    extracted: str | None
    reason: str


class GradeTimeout(Exception):
    pass


def run_with_timeout(fn: Callable[[], T], seconds: float = TIMEOUT_S) -> T:
    """``fn()`` or :class:`GradeTimeout` after ``seconds``, from any thread."""
    if threading.current_thread() is threading.main_thread():
        def on_alarm(signum: int, frame: Any) -> None:
            raise GradeTimeout(f"timed out after {seconds}s")

        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    worker = threading.Thread(target=target, daemon=True, name="grade-timeout")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise GradeTimeout(f"timed out after {seconds}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


# --- math -----------------------------------------------------------------------------------

def _gold_text(reference: str) -> str:
    ref = reference.strip()
    if "\\boxed" in ref or ref.startswith("$"):
        return ref
    return f"${ref}$"


def _quiet_math_verify() -> None:
    """math-verify warns once that its timeout is off; ours is on, so the warning misleads."""
    import math_verify.grader
    import math_verify.parser

    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True


def _parse(text: str, gold: bool) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    _quiet_math_verify()
    if gold:
        configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    else:
        configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return parse(text, extraction_config=configs, parsing_timeout=None)


def grade_math(response: str, reference: str, timeout_s: float = TIMEOUT_S) -> Grade:
    from math_verify import verify

    try:
        gold = run_with_timeout(lambda: _parse(_gold_text(reference), gold=True), timeout_s)
        if not gold:
            return Grade(None, None, f"reference answer {reference[:80]!r} could not be parsed")
        boxed = last_boxed(response)  # s1 convention: the last \\boxed{} is the answer
        target = f"$\\boxed{{{boxed}}}$" if boxed else response
        pred = run_with_timeout(lambda: _parse(target, gold=False), timeout_s)
        if not pred:
            return Grade(None, None, "no answer found in the response")
        extracted = str(pred[-1])
        ok = run_with_timeout(lambda: verify(gold, pred, timeout_seconds=None), timeout_s)
    except GradeTimeout as e:
        return Grade(None, None, f"math-verify {e}")
    return Grade(bool(ok), extracted, "math-verify: equivalent" if ok else "math-verify: not equivalent")


# --- multiple choice ------------------------------------------------------------------------

def _choice_patterns(n: int) -> list[re.Pattern[str]]:
    L = f"[A-{_LETTERS[n - 1]}]"
    return [
        re.compile(rf"\\boxed\s*\{{\s*(?:\\text\{{)?\(?({L})\)?\}}?\s*\}}"),
        re.compile(rf"(?i:answer)\s*(?:is|:)?\s*[:\-]?\s*\**\s*\(?({L})\)?(?![A-Za-z])"),
        re.compile(rf"\(({L})\)"),
        re.compile(rf"(?<![A-Za-z]){L}(?![A-Za-z])".replace(L, f"({L})")),
    ]


def _reference_letter(reference: str, choices: list[str]) -> str | None:
    ref = reference.strip().strip("()").strip()
    if len(ref) == 1 and ref.upper() in _LETTERS[: len(choices)]:
        return ref.upper()
    if ref.isdigit() and 0 <= int(ref) < len(choices):
        return choice_letter(int(ref))
    for i, c in enumerate(choices):
        if _norm(c) == _norm(ref):
            return choice_letter(i)
    return None


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip("$").lower()).rstrip(".")


def extract_choice(response: str, choices: list[str]) -> str | None:
    """The chosen letter: a boxed letter, "answer: X", "(X)", a lone capital, or the choice text."""
    if not choices:
        return None
    boxed = last_boxed(response)
    if boxed is not None:
        b = boxed.replace("\\text{", "").replace("}", "").strip().strip("()").strip()
        if len(b) == 1 and b.upper() in _LETTERS[: len(choices)]:
            return b.upper()
        matched = [i for i, c in enumerate(choices) if _norm(c) == _norm(b)]
        if len(matched) == 1:
            return choice_letter(matched[0])
    for pattern in _choice_patterns(len(choices)):
        found = pattern.findall(response)
        if found:
            return found[-1].upper()
    tail = _norm(response)[-200:]
    matched = [i for i, c in enumerate(choices) if _norm(c) and _norm(c) in tail]
    return choice_letter(matched[-1]) if len(matched) == 1 else None


def grade_choice(response: str, reference: str, choices: list[str]) -> Grade:
    gold = _reference_letter(reference, choices)
    if gold is None:
        return Grade(None, None, f"reference {reference[:80]!r} is not a letter, index or choice of {len(choices)}")
    got = extract_choice(response, choices)
    if got is None:
        return Grade(None, None, "no choice letter found in the response")
    return Grade(got == gold, got, f"choice {got} vs reference {gold}")


def grade(response: str, reference: str, choices: list[str] | None = None,
          kind: Literal["auto", "math", "choice"] = "auto") -> Grade:
    """Grade one response. ``auto`` means multiple choice when ``choices`` are given, else math."""
    if response is None or not str(response).strip():
        return Grade(None, None, "empty response")
    if reference is None or not str(reference).strip():
        return Grade(None, None, "no reference answer")
    choices = list(choices) if choices is not None else None
    if kind == "choice" or (kind == "auto" and choices):
        if not choices:
            return Grade(None, None, "kind 'choice' needs choices")
        return grade_choice(str(response), str(reference), choices)
    return grade_math(str(response), str(reference))


# --- LLM judge (s1's grading prompt) --------------------------------------------------------

JUDGE_PROMPT = """You are an AI assistant for grading a science problem. The user will provide you with the question itself, an attempt made by a student and the correct answer to the problem. Your job is to judge whether the attempt is correct by comparing it with the correct answer. If the expected solution concludes with a number or choice, there should be no ambiguity. If the expected solution involves going through the entire reasoning process, you should judge the attempt based on whether the reasoning process is correct with correct answer if helpful.

The user will provide the attempt and the correct answer in the following format:

# Problem
{{problem}}

## Attempt
{{attempt}}

## Correct answer
{{solution}}

Explain your reasoning, and end your response on a new line with only "Yes" or "No" (without quotes).

# Problem
{problem}

## Attempt
{attempt}

## Correct answer
{solution}"""

_VERDICT = re.compile(r"^[\s*#>`\"'_]*(yes|no)\b[\s.!*`\"'_]*$", re.IGNORECASE)


def parse_judgement(text: str) -> bool | None:
    """The Yes/No on the last non-empty line, else None."""
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    if not lines:
        return None
    m = _VERDICT.match(lines[-1])
    return None if m is None else m.group(1).lower() == "yes"


def judge_grade(question: str, response: str, reference: str, generator: Any) -> Grade:
    """Ask a model (any :class:`~s1ray.models.generation.Generator`) whether the attempt is right."""
    prompt = generator.chat_prompt(JUDGE_PROMPT.format(problem=question, attempt=response, solution=reference))
    gen = generator.generate([prompt])[0]
    if gen.finish_reason == "error":
        return Grade(None, None, f"judge failed: {gen.error}")
    verdict = parse_judgement(gen.text)
    if verdict is None:
        return Grade(None, gen.text.strip()[-80:] or None, "judge gave no final Yes/No line")
    return Grade(verdict, "Yes" if verdict else "No", "LLM judge")
