"""Benchmark loaders on small fixtures in each real format (not the shared data)."""

from __future__ import annotations

import json

import pytest

from s1ray.evaluate.benchmarks import format_question, load_benchmark
from s1ray.evaluate.config import BenchmarkConfig, EvaluateConfig
from s1ray.io.readers import SourceError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_math500_format(tmp_path):
    p = _jsonl(tmp_path / "math500.jsonl", [
        {"problem": "Find $x$.", "solution": "So $\\boxed{\\frac{1}{2}}$.", "answer": "\\frac{1}{2}",
         "subject": "Algebra", "level": 2, "unique_id": "test/algebra/1.json"},
        {"problem": "Find $y$.", "solution": "Hence $\\boxed{3}$.", "subject": "Algebra", "level": 1,
         "unique_id": "test/algebra/2.json"},  # no answer field: taken from the boxed solution
        {"problem": "", "solution": "x", "answer": "1"},  # quarantined: empty question
    ])
    b = load_benchmark(BenchmarkConfig(name="math500", path=p))
    assert [q["answer"] for q in b.questions] == ["\\frac{1}{2}", "3"]
    assert all(q["kind"] == "math" and q["benchmark"] == "math500" for q in b.questions)
    assert b.n_rows == 3 and len(b.quarantined) == 1 and "question" in b.quarantined[0]["reason"]
    assert b.quarantined[0]["row"] == "3"


def test_aime_and_amc_formats(tmp_path):
    aime = _jsonl(tmp_path / "aime24.jsonl", [{"id": 60, "problem": "P1", "solution": "s", "answer": "204",
                                               "url": "u", "question": "P1"}])
    amc = _jsonl(tmp_path / "amc23.jsonl", [{"id": 0, "problem": "P2", "answer": 27.0, "url": "u", "question": "P2"},
                                            {"id": 1, "problem": "P3", "answer": 0.5, "url": "u", "question": "P3"}])
    assert load_benchmark(BenchmarkConfig(name="aime24", path=aime)).questions[0]["answer"] == "204"
    amc_q = load_benchmark(BenchmarkConfig(name="amc23", path=amc)).questions
    assert [q["answer"] for q in amc_q] == ["27", "0.5"]  # integral floats lose the ".0"


def test_gpqa_choices_shuffled_deterministically(tmp_path):
    rows = [{"Question": f"Q{i}?", "Correct Answer": f"right{i}", "Incorrect Answer 1": f"w1-{i}",
             "Incorrect Answer 2": f"w2-{i}", "Incorrect Answer 3": f"w3-{i}"} for i in range(12)]
    rows.append({"Question": "broken", "Correct Answer": "x", "Incorrect Answer 1": "y"})
    p = _jsonl(tmp_path / "gpqa.jsonl", rows)
    b = load_benchmark(BenchmarkConfig(name="gpqa_diamond", path=p))
    assert len(b.questions) == 12 and len(b.quarantined) == 1
    for i, q in enumerate(b.questions):
        assert q["kind"] == "choice" and sorted(q["choices"]) == sorted([f"right{i}", f"w1-{i}", f"w2-{i}", f"w3-{i}"])
        assert q["choices"]["ABCD".index(q["answer"])] == f"right{i}"
    assert len({q["answer"] for q in b.questions}) > 1  # not always the same position
    again = load_benchmark(BenchmarkConfig(name="gpqa_diamond", path=p))
    assert [q["choices"] for q in again.questions] == [q["choices"] for q in b.questions]
    other = load_benchmark(BenchmarkConfig(name="gpqa_diamond", path=p, shuffle_seed=7))
    assert [q["choices"] for q in other.questions] != [q["choices"] for q in b.questions]


def test_jsonl_with_field_mapping_and_limit(tmp_path):
    p = _jsonl(tmp_path / "mine.jsonl", [
        {"prompt": "What is 2+2?", "target": "4"},
        {"prompt": "Which is prime?", "target": "1", "opts": ["4", "5", "6"]},  # index -> letter
        {"prompt": "No target"},
        {"prompt": "Later", "target": "9"},
    ])
    cfg = BenchmarkConfig(name="jsonl", path=p, columns={"question": "prompt", "answer": "target", "choices": "opts"},
                          limit=3)
    b = load_benchmark(cfg)
    assert b.name == "mine"
    assert [(q["answer"], q["kind"]) for q in b.questions] == [("4", "math"), ("B", "choice")]
    assert [q["reason"] for q in b.quarantined] == ["no reference answer"]
    text = format_question(b.questions[1], "box it", "pick a letter")
    assert text == "Which is prime?\n\nA) 4\nB) 5\nC) 6\n\npick a letter"


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(SourceError, match="file not found"):
        load_benchmark(BenchmarkConfig(name="math500", path=str(tmp_path / "missing.jsonl")))
    p = _jsonl(tmp_path / "empty.jsonl", [{"question": "q"}])
    with pytest.raises(SourceError, match="no usable questions"):
        load_benchmark(BenchmarkConfig(name="jsonl", path=p))
    with pytest.raises(ValueError, match="needs `path`"):
        BenchmarkConfig(name="jsonl")


def test_config_validation():
    base = dict(generation={"model": "tiny:tiny"}, benchmarks=[{"name": "math500"}])
    assert EvaluateConfig.model_validate({**base, "budgets": [512, 128, 512]}).budgets == [128, 512]
    with pytest.raises(ValueError, match="positive"):
        EvaluateConfig.model_validate({**base, "budgets": [0]})
    with pytest.raises(ValueError, match="unique"):
        EvaluateConfig.model_validate({**base, "budgets": [8], "benchmarks": [{"name": "math500"}, {"name": "math500"}]})
