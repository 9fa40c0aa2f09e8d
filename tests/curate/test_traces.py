"""Teacher traces: only rows without a trace, originals untouched, retries, quarantine, grading."""

import pandas as pd

from s1ray.curate.scoring import ScoringConfig, scoring_outcome
from s1ray.curate.traces import (TeacherTraces, TracesConfig, format_question, has_trace, resolved_thinking,
                                 split_teacher_output)
from s1ray.models.generation import Generation, GenerationConfig


class ScriptedTeacher:
    """Stands in for a Generator: answers from a script keyed by a word in the prompt."""

    def __init__(self, script):
        self.script = script
        self.cfg = GenerationConfig(model="tiny:tiny")
        self.calls = []

    def chat_prompt(self, user, system=None):
        return f"<user>{user}</user>"

    def generate(self, prompts, max_new_tokens=None, stop=None):
        self.calls.append((list(prompts), self.cfg.temperature))
        out = []
        for p in prompts:
            key = next(k for k in self.script if k in p)
            answers = self.script[key]
            text = answers[min(len(self.calls) - 1, len(answers) - 1)]
            out.append(text if isinstance(text, Generation) else Generation(text, len(text.split()), "stop"))
        return out


GOOD = "Let me think. Two plus two is four, clearly, by counting.\n\nFinal Answer: \\boxed{4}"
WRONG = "Let me think. Two plus two is five, I am fairly sure of it.\n\nFinal Answer: \\boxed{5}"


def pool():
    return pd.DataFrame({
        "question": ["alpha: what is 2+2?", "beta: what is 2+2?", "gamma: what is 2+2?", "delta: 2+2?"],
        "answer": ["4", "4", "4", "4"],
        "thinking": [["my own trace"], None, None, None],
        "attempt": ["own attempt", None, None, None],
        "attempt_correct": [True, None, None, None],
    })


def test_split_teacher_output():
    assert split_teacher_output(GOOD) == ("Let me think. Two plus two is four, clearly, by counting.",
                                          "Final Answer: \\boxed{4}")
    thinking, attempt = split_teacher_output("step one\n\nso it is \\boxed{7}")
    assert thinking.startswith("step one") and attempt == "so it is \\boxed{7}"


def test_teacher_fills_only_missing_traces_and_retries_then_quarantines():
    truncated = Generation("Let me think about this for a long", 8, "length")
    teacher = ScriptedTeacher({"alpha": [GOOD], "beta": [GOOD], "gamma": [truncated, WRONG],
                               "delta": [truncated]})
    cfg = TracesConfig(enabled=True, teacher=GenerationConfig(model="tiny:tiny"), max_attempts=2)
    df = pool()
    out = TeacherTraces(cfg, generator=teacher)(df)
    # Row 0 has its own trace: never sent to the teacher, original columns unchanged.
    assert all("alpha" not in p for prompts, _ in teacher.calls for p in prompts)
    assert out["thinking"].tolist()[0] == ["my own trace"] and pd.isna(out["attempt"][1])
    assert out["trace_source"].fillna("-").tolist() == ["original", "teacher", "teacher", "-"]
    assert out["trace_thinking"][0] == "my own trace" and out["trace_attempt"][1] == "Final Answer: \\boxed{4}"
    # gamma failed once (truncated), succeeded on the sampled retry; delta kept failing.
    assert len(teacher.calls) == 2 and teacher.calls[0][1] == 0.0 and teacher.calls[1][1] == 0.7
    assert teacher.cfg.temperature == 0.0  # restored after the retry
    assert pd.isna(out["trace_error"][2])
    assert out["trace_error"][3] == "truncated at max_new_tokens (after 2 attempt(s))"
    # Grades: the source's own grade, then the teacher attempts graded against the answer.
    assert out["trace_correct"].tolist()[:3] == [True, True, False] and pd.isna(out["trace_correct"][3])
    assert resolved_thinking(out)[1].startswith("Let me think")
    outcome = scoring_outcome(out, ScoringConfig(traces=cfg))
    assert outcome["scoring_quarantine"].notna().tolist() == [False, False, False, True]


def test_helpers():
    df = pool()
    assert has_trace(df).tolist() == [True, False, False, False]
    assert format_question("Pick one", ["x", "y"]) == "Pick one\n\nA. x\nB. y"
    gpqa = "Which gas?\nAnswer Choices:\n(A) neon\n(B) argon\n(C) xenon\n(D) radon"  # s1K lists its options
    assert format_question(gpqa, ["neon", "argon", "xenon", "radon"]) == gpqa
    import pytest

    with pytest.raises(ValueError, match="teacher"):
        TracesConfig(enabled=True)


def test_teacher_is_not_loaded_when_every_row_has_a_trace():
    cfg = TracesConfig(enabled=True, teacher=GenerationConfig(model="/nonexistent/teacher"))
    df = pool().iloc[:1].reset_index(drop=True)
    out = TeacherTraces(cfg)(df)  # would raise if it tried to load the teacher
    assert out["trace_source"].tolist() == ["original"] and bool(out["trace_correct"][0])
