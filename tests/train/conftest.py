"""Small s1K-shaped training sets built inside the tests (no shared data)."""

import json
from pathlib import Path

import pytest


def s1k_rows(n: int = 24) -> list[dict]:
    """Deterministic arithmetic questions with a reasoning trace and an attempt, of varied length."""
    rows = []
    for i in range(n):
        a, b = 3 + i, 7 + 2 * i
        steps = " ".join(f"Step {k}: {a} + {k} = {a + k}." for k in range(1 + i % 6))
        rows.append({
            "question": f"What is {a} + {b}?",
            "solution": f"$\\boxed{{{a + b}}}$",
            "thinking_trajectories": [f"We add {a} and {b}. {steps} So the sum is {a + b}."],
            "attempt": f"The answer is $\\boxed{{{a + b}}}$.",
            "cot_type": "math",
            "source_type": "synthetic/add",
            "metadata": "{}",
        })
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def s1k_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "s1k.jsonl", s1k_rows())
