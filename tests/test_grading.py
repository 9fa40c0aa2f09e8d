"""Grading: a table of tricky math and multiple-choice cases, timeouts off the main thread, the LLM judge."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from s1ray import grading
from s1ray.grading import Grade, GradeTimeout, grade, judge_grade, parse_judgement, run_with_timeout
from s1ray.models.generation import Generation

MATH_CASES = [  # response, reference, expected verdict
    (r"The answer is $\boxed{\frac{1}{2}}$.", "0.5", True),
    (r"so $\boxed{\dfrac{3}{4}}$", r"\frac34", True),
    (r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{1}{\sqrt{2}}", True),
    (r"\boxed{(1,3]}", "(1,3]", True),
    (r"\boxed{[1,3)}", "(1,3]", False),  # interval ends matter
    (r"\boxed{30^\circ}", "30", True),  # degrees
    (r"\boxed{30}", r"30^\circ", True),
    (r"\boxed{x^2+2x+1}", "(x+1)^2", True),  # symbolic equality
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)", True),  # tuples
    (r"\boxed{(3, \pi)}", r"\left( 3, \frac{\pi}{2} \right)", False),
    (r"\boxed{27}", "27.0", True),  # AMC23 stores answers as floats
    (r"\boxed{204}", "205", False),
    (r"Final Answer: 204", "204", True),  # no box: the answer anchor
    (r"\boxed{3} at first, but actually \boxed{4}", "4", True),  # the last box counts
    (r"\boxed{x = 5}", "5", True),
    (r"\boxed{10\%}", "10", True),
    (r"\boxed{\{1, 2\}}", r"\{2,1\}", True),  # sets are unordered
    (r"\boxed{2\sqrt{3}}", r"\sqrt{12}", True),
    (r"\boxed{1000}", "1,000", True),
]


@pytest.mark.parametrize("response,reference,expected", MATH_CASES)
def test_math_table(response, reference, expected):
    g = grade(response, reference)
    assert g.correct is expected, g
    assert g.extracted


@pytest.mark.parametrize("response", ["", "   ", "I do not know.", "The weather is nice"])
def test_unparseable_is_none(response):
    g = grade(response, "5")
    assert g.correct is None and g.extracted is None and g.reason


def test_missing_reference_is_none():
    assert grade(r"\boxed{5}", "").correct is None


CHOICES = ["12", "15", "18", "21"]
CHOICE_CASES = [
    ("The answer is (B).", "B", True),
    (r"Therefore $\boxed{C}$", "C", True),
    (r"\boxed{\text{(D)}}", "D", True),
    ("Answer: C", "2", True),  # reference as a 0-based index (MMLU)
    ("Answer: A", "1", False),
    ("I conclude the answer is 18", "C", True),  # the choice text itself
    ("Answer: b", "B", None),  # a lower-case word is not a choice letter
    ("Hmm, no idea at all", "A", None),
    ("(A) looks tempting but the answer is (D)", "D", True),  # the last mention counts
]


@pytest.mark.parametrize("response,reference,expected", CHOICE_CASES)
def test_choice_table(response, reference, expected):
    assert grade(response, reference, CHOICES).correct is expected


def test_choice_kind_needs_choices_and_bad_reference():
    assert grade("A", "A", kind="choice").correct is None
    assert "not a letter" in grade("Answer: A", "Z", CHOICES).reason
    # kind="math" overrides auto even with choices
    assert grade(r"\boxed{18}", "18", CHOICES, kind="math").correct is True


def test_grading_off_the_main_thread():
    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda c: grade(c[0], c[1]).correct, MATH_CASES))
    assert out == [c[2] for c in MATH_CASES]


@pytest.mark.parametrize("where", ["main", "thread"])
def test_timeout_is_enforced_everywhere(where):
    def slow():
        time.sleep(3)
        return 1

    box = {}

    def call():
        t0 = time.monotonic()
        try:
            run_with_timeout(slow, 0.3)
        except GradeTimeout:
            box["timeout"] = time.monotonic() - t0

    if where == "main":
        call()
    else:
        t = threading.Thread(target=call)
        t.start()
        t.join()
    assert box["timeout"] < 1.5


def test_slow_parse_gives_none_not_a_hang(monkeypatch):
    real = grading._parse

    def slow_parse(text, gold):
        if not gold:
            time.sleep(2)
        return real(text, gold)

    monkeypatch.setattr(grading, "_parse", slow_parse)
    result = {}
    t = threading.Thread(target=lambda: result.update(g=grading.grade_math(r"\boxed{1}", "1", timeout_s=0.2)))
    t.start()
    t.join()
    assert result["g"].correct is None and "timed out" in result["g"].reason


def test_run_with_timeout_passes_errors_through():
    with pytest.raises(ZeroDivisionError):
        run_with_timeout(lambda: 1 / 0, 1.0)


class ScriptedJudge:
    """A generator stub that answers every prompt with a fixed reply."""

    def __init__(self, reply, finish="stop"):
        self.reply, self.finish, self.prompts = reply, finish, []

    def chat_prompt(self, user, system=None):
        return f"<user>{user}</user>"

    def generate(self, prompts, max_new_tokens=None, stop=None):
        self.prompts += prompts
        return [Generation(self.reply, 3, self.finish, "boom" if self.finish == "error" else None)]


@pytest.mark.parametrize("reply,expected", [
    ("The attempt matches.\nYes", True),
    ("Different value.\n\n**No**", False),
    ("yes.", True),
    ("I think yes but not sure", None),
    ("", None),
])
def test_judge_grade(reply, expected):
    judge = ScriptedJudge(reply)
    g = judge_grade("What is 1+1?", "It is 2", "2", judge)
    assert g.correct is expected
    assert "What is 1+1?" in judge.prompts[0] and "It is 2" in judge.prompts[0] and "## Correct answer" in judge.prompts[0]


def test_judge_error_is_none():
    g = judge_grade("q", "a", "r", ScriptedJudge("", finish="error"))
    assert g == Grade(None, None, "judge failed: boom")


def test_parse_judgement_uses_last_line_only():
    assert parse_judgement("Yes, at first glance.\nBut the value differs.\nNo") is False
