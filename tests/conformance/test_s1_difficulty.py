"""Conformance: the difficulty filter and the s1K preset's GPQA answers.

s1 (data/filter.ipynb cells 4 and 9, data/bulk_inference.py, data/featurization.py): a question is
dropped when Qwen2.5-7B-Instruct or Qwen2.5-32B-Instruct solved it; a question whose attempts
have no grade has a missing feature and is dropped by cell 4, not kept as hard. The solvers see
the bare question. s1K's GPQA rows (data/fix_gpqa.py) end their question with the options and
their solution with "Answer: <letter>".
"""

import json
from pathlib import Path

import pandas as pd
import yaml

from s1ray.curate.config import CurateConfig
from s1ray.curate.difficulty import DifficultyConfig, SolverConfig, add_failures, difficulty_keep, difficulty_reason
from s1ray.grading import grade
from s1ray.io.readers import SourceConfig, read_source

CONFIGS = Path(__file__).parents[2] / "jobs" / "configs"
SOLVERS = [SolverConfig(name=n, generation={"backend": "hf", "model": "tiny:tiny"}) for n in ("qwen7b", "qwen32b")]


def _graded():
    df = pd.DataFrame({
        "solver_qwen7b_correct": pd.array([False, None, True, None, False], dtype="boolean"),
        "solver_qwen32b_correct": pd.array([False, False, None, None, True], dtype="boolean"),
    })
    return add_failures(df, ["qwen7b", "qwen32b"])


def test_ungraded_attempts_drop_the_question_in_s1():
    cfg = DifficultyConfig(solvers=SOLVERS, filter="any", ungraded="drop")
    assert difficulty_keep(_graded(), cfg).tolist() == [True, False, False, False, False]
    reasons = difficulty_reason(_graded(), cfg)
    assert reasons[0] is None and reasons[2].startswith("too_easy") and reasons[4].startswith("too_easy")
    assert reasons[1].startswith("ungraded: 1/2") and reasons[3].startswith("ungraded: 2/2")


def test_s1ray_default_counts_ungraded_as_not_solved():
    cfg = DifficultyConfig(solvers=SOLVERS)
    assert cfg.ungraded == "unsolved"
    assert difficulty_keep(_graded(), cfg).tolist() == [True, True, False, True, False]


def _s1_curate_configs():
    out = [CurateConfig.model_validate(yaml.safe_load((CONFIGS / "curate_s1_59k.yaml").read_text()))]
    pipe = yaml.safe_load((CONFIGS / "pipeline_s1_32b.yaml").read_text())
    out.append(CurateConfig.model_validate({k: v for k, v in pipe["curate"].items()}))
    return out


def test_s1_configs_use_s1s_difficulty_rule_and_bare_question():
    for cfg in _s1_curate_configs():
        d = cfg.scoring.difficulty
        assert d.filter == "any" and d.ungraded == "drop"
        assert [s.name for s in d.solvers] == ["qwen7b", "qwen32b"]
        for s in d.solvers:
            assert s.prompt.format(question="What is 2+2?") == "What is 2+2?"
            assert s.choice_prompt.format(question="What is 2+2?") == "What is 2+2?"
            assert s.generation.temperature == 0.05 and s.generation.max_new_tokens == 32768


def test_s1k_preset_derives_gpqa_answer_letter_and_options(tmp_path):
    question = ("Which particle mediates the electromagnetic force?\nAnswer Choices:\n(A) gluon\n(B) photon\n"
                "(C) W boson\n(D) graviton")
    rows = [{"question": question, "solution": "Photons carry the force.\n\nAnswer: B", "cot_type": "science",
             "source_type": "Idavidrein/gpqa", "metadata": str({"Correct Answer": "photon"}),
             "cot": None, "thinking_trajectories": ["It is the photon."], "attempt": "The answer is (B)."},
            {"question": "Which particle mediates the strong force?", "solution": "Gluons do, as QCD says." * 20,
             "cot_type": "science", "source_type": "Idavidrein/gpqa",
             "metadata": str({"Correct Answer": "gluon", "Incorrect Answer 1": "photon"}),
             "cot": None, "thinking_trajectories": ["Gluons."], "attempt": "gluon"}]
    path = tmp_path / "s1k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recs = read_source(SourceConfig(name="s1k", path=str(path), preset="s1k")).records
    assert recs[0]["answer"] == "B" and recs[0]["choices"] == ["gluon", "photon", "W boson", "graviton"]
    assert recs[0]["question"] == question  # the question text stays s1K's
    assert grade(recs[0]["attempt"], recs[0]["answer"], recs[0]["choices"]).correct is True
    assert grade("So the answer is (A).", recs[0]["answer"], recs[0]["choices"]).correct is False
    assert recs[1]["answer"] == "gluon"  # the 59K pool: no options yet, the metadata names the answer
