"""Solver attempts graded against references, failure counts, and the difficulty filter."""

import numpy as np
import pandas as pd

from s1ray.curate.difficulty import (DifficultyConfig, SolverAttempts, SolverConfig, add_failures,
                                     correct_column, difficulty_keep, difficulty_reason)
from s1ray.models.generation import Generation, GenerationConfig


class ScriptedSolver:
    def __init__(self, answers):
        self.answers = answers  # question word -> response

    def chat_prompt(self, user, system=None):
        return user

    def generate(self, prompts, max_new_tokens=None, stop=None):
        out = []
        for p in prompts:
            key = next(k for k in self.answers if k in p)
            out.append(Generation(self.answers[key], 5, "stop"))
        return out


def questions():
    return pd.DataFrame({
        "question": ["q-right: 1+1?", "q-wrong: 1+2?", "q-junk: 2+2?", "q-mc-right: pick", "q-mc-wrong: pick",
                     "q-noref: ?"],
        "answer": ["2", "3", "4", "B", "A", None],
        "choices": [None, None, None, ["red", "blue"], ["red", "blue"], None],
    })


def solver(name, answers):
    cfg = SolverConfig(name=name, generation=GenerationConfig(model="tiny:tiny"))
    return SolverAttempts(cfg, generator=ScriptedSolver(answers))


STRONG = {"q-right": "so \\boxed{2}", "q-wrong": "\\boxed{3}", "q-junk": "I don't know", "q-mc-right": "\\boxed{B}",
          "q-mc-wrong": "The answer is (A)", "q-noref": "\\boxed{1}"}
WEAK = {"q-right": "\\boxed{2}", "q-wrong": "\\boxed{7}", "q-junk": "no idea", "q-mc-right": "\\boxed{A}",
        "q-mc-wrong": "\\boxed{B}", "q-noref": "x"}


def test_grading_outcomes_become_columns():
    out = solver("strong", STRONG)(questions())
    col = correct_column("strong")
    got = out[col].tolist()
    assert [got[i] for i in (0, 1, 3, 4)] == [True, True, True, True]
    assert pd.isna(got[2]) and pd.isna(got[5])  # unparseable answer; no reference
    assert out["solver_strong_reason"][5] == "no reference answer"
    assert out["solver_strong_extracted"][3] == "B"
    weak = solver("weak", WEAK)(questions())["solver_weak_correct"].tolist()
    assert [weak[i] for i in (0, 1, 3, 4)] == [True, False, False, False]


def test_multiple_choice_prompt_lists_options():
    s = solver("x", STRONG)
    assert "A. red\nB. blue" in s.prompt("pick", ["red", "blue"]) and "letter" in s.prompt("pick", ["a", "b"])


def test_judge_fallback_rescues_unparseable_answers():
    class Judge:
        def chat_prompt(self, user, system=None):
            return user

        def generate(self, prompts, max_new_tokens=None, stop=None):
            return [Generation("The attempt matches.\nYes", 4, "stop") for _ in prompts]

    cfg = SolverConfig(name="s", generation=GenerationConfig(model="tiny:tiny"))
    out = SolverAttempts(cfg, generator=ScriptedSolver(STRONG), judge_generator=Judge())(questions())
    assert bool(out["solver_s_correct"][2]) and "LLM judge" in out["solver_s_reason"][2]
    assert pd.isna(out["solver_s_correct"][5])  # still no reference: the judge is not asked


def test_failures_and_filter_modes():
    df = solver("weak", WEAK)(solver("strong", STRONG)(questions()))
    df = add_failures(df, ["strong", "weak"])
    assert df["solver_solved"].tolist() == [2, 1, 0, 1, 1, 0]
    assert df["solver_failures"].tolist() == [0, 1, 2, 1, 1, 2]
    solvers = [SolverConfig(name=n, generation=GenerationConfig(model="tiny:tiny")) for n in ("strong", "weak")]
    any_ = difficulty_keep(df, DifficultyConfig(solvers=solvers, filter="any"))
    assert np.flatnonzero(any_).tolist() == [2, 5]  # s1: drop if any solver solved it
    all_ = difficulty_keep(df, DifficultyConfig(solvers=solvers, filter="all"))
    assert np.flatnonzero(all_).tolist() == [1, 2, 3, 4, 5]
    half = difficulty_keep(df, DifficultyConfig(solvers=solvers, filter="threshold", threshold=0.75))
    assert np.flatnonzero(half).tolist() == [1, 2, 3, 4, 5]
    assert difficulty_keep(df, DifficultyConfig(solvers=solvers, filter="none")).all()
    reasons = difficulty_reason(df, DifficultyConfig(solvers=solvers))
    assert reasons[0] == "too_easy: solved by 2/2 solver(s) (filter=any)" and reasons[2] is None
