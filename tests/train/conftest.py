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
def make_s1k(tmp_path):
    """make_s1k(n=24, edit=None) -> path of an s1K-schema JSONL file (edit(rows) may change rows)."""
    def make(n: int = 24, edit=None, name: str = "s1k.jsonl") -> Path:
        rows = s1k_rows(n)
        if edit:
            edit(rows)
        return write_jsonl(tmp_path / name, rows)
    return make


@pytest.fixture(scope="module")
def s1k_module_file(tmp_path_factory) -> Path:
    """The default 24-row s1K-schema file, shared by the tests of one module."""
    return write_jsonl(tmp_path_factory.mktemp("s1k") / "s1k.jsonl", s1k_rows())
