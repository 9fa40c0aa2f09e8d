"""Real question sets that install as Python packages, for offline runs.

- ``champ``: the 270 competition problems of CHAMP (package ``champ-dataset``, MIT), with
  human-written step-by-step solutions and final answers.
- ``reasoning_gym``: procedurally generated, verifiable questions from ``reasoning-gym``
  (Apache-2.0), in many task families; deterministic for a seed.

Rows come out in the shape of the ``generic`` preset (question, solution, answer,
source_type, plus extra keys that end up in metadata).
"""

from __future__ import annotations

from typing import Any, Iterator

# Families whose answers are short, checkable math answers (graded by math-verify).
DEFAULT_GYM_TASKS = ("basic_arithmetic", "chain_sum", "gcd", "lcm", "fraction_simplification",
                     "simple_equations", "prime_factorization", "gsm_symbolic")


def champ_rows(version: str = "v0") -> Iterator[dict[str, Any]]:
    try:
        import champ_dataset
    except ImportError as e:
        raise ImportError("the packaged source 'champ' needs `pip install champ-dataset natsort`") from e
    problems = champ_dataset.load(version).problems
    for ident, p in problems.items():
        steps = [s.text if hasattr(s, "text") else s._text for s in p.solution.steps]
        answer = getattr(p, "answer", None) or p._answer
        yield {
            "question": getattr(p, "text", None) or p._text,
            "solution": "\n".join(steps),
            "answer": answer,
            # A worked final response, so the solution can serve as an s1-style trace + attempt.
            "worked_attempt": f"The final answer is $\\boxed{{{answer}}}$.",
            "source_type": f"champ/{p.category}",
            "identifier": ident,
            "category": p.category,
        }


def reasoning_gym_rows(tasks: list[str] | tuple[str, ...] = DEFAULT_GYM_TASKS, per_task: int = 50,
                       seed: int = 0) -> Iterator[dict[str, Any]]:
    try:
        import reasoning_gym
    except ImportError as e:
        raise ImportError("the packaged source 'reasoning_gym' needs `pip install reasoning-gym`") from e
    for i, task in enumerate(tasks):
        for entry in reasoning_gym.create_dataset(task, size=per_task, seed=seed + i):
            meta = {k: v for k, v in entry.get("metadata", {}).items() if k != "difficulty"}
            yield {
                "question": entry["question"],
                "solution": None,
                "answer": str(entry["answer"]),
                "source_type": f"reasoning_gym/{task}",
                "task_metadata": meta,
            }


PACKAGED_SOURCES = {"champ": champ_rows, "reasoning_gym": reasoning_gym_rows}


def packaged_rows(name: str, options: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    if name not in PACKAGED_SOURCES:
        raise ValueError(f"unknown packaged source {name!r}; known: {sorted(PACKAGED_SOURCES)}")
    return PACKAGED_SOURCES[name](**(options or {}))
