"""Accuracy with a bootstrap interval, and s1's test-time scaling metrics (Control, Scaling, Performance).

s1 (section 3.2) defines, over a set of evaluated compute budgets:
- Control: the fraction of evaluation runs (one per budget setting) whose *average* thinking
  tokens fall within [a_min, a_max] (budget forcing: 100% by construction). ``control`` is that
  metric; ``control_per_sample`` (the fraction of single samples within their budget) is s1ray's
  stricter extra figure;
- Scaling: the average slope of the piecewise-linear accuracy-vs-thinking-tokens curve, over
  all pairs of points (positive is useful, larger is better);
- Performance: the best accuracy reached.
Here a point is one budget: (average thinking tokens, accuracy). Scaling is reported in
accuracy per thinking token (``scaling``) and in percentage points per 1,000 tokens.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Sequence

import numpy as np


def accuracy(correct: Sequence[bool | None]) -> float:
    """Fraction correct; ungradeable answers (None) count as wrong."""
    if not len(correct):
        return float("nan")
    return float(np.mean([c is True for c in correct]))


def bootstrap_ci(correct: Sequence[bool | None], n_samples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy (questions resampled with replacement)."""
    x = np.array([c is True for c in correct], dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_samples, len(x)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def control(avg_thinking_tokens: Sequence[float], budgets: Sequence[int],
            min_tokens: Sequence[int | None] | None = None) -> float:
    """s1's Control: the fraction of runs (one per budget) whose average thinking is within [min, budget]."""
    return control_per_sample(avg_thinking_tokens, budgets, min_tokens)


def control_per_sample(thinking_tokens: Sequence[float], budgets: Sequence[int],
                       min_tokens: Sequence[int | None] | None = None) -> float:
    """Fraction of items (samples, or runs) whose thinking stayed within [min, budget]."""
    if not len(thinking_tokens):
        return float("nan")
    mins = min_tokens if min_tokens is not None else [None] * len(thinking_tokens)
    ok = [(lo is None or t >= lo) and t <= b for t, b, lo in zip(thinking_tokens, budgets, mins)]
    return float(np.mean(ok))


def scaling(points: Sequence[tuple[float, float]]) -> float | None:
    """Average slope over all pairs of (thinking tokens, accuracy) points; pairs at equal x skipped."""
    slopes = [(ya - yb) / (xa - xb) for (xa, ya), (xb, yb) in combinations(points, 2) if xa != xb]
    return float(np.mean(slopes)) if slopes else None


def performance(points: Sequence[tuple[float, float]]) -> float:
    return float(max(y for _, y in points)) if points else float("nan")


def summarize(samples: list[dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per benchmark, method and budget: accuracy (+CI), thinking tokens, control; per method: the s1 metrics.

    ``samples`` rows need: benchmark, method, budget, correct, thinking_tokens (min_thinking_tokens optional).
    """
    out: dict[str, Any] = {}
    keys = sorted({(s["benchmark"], s["method"]) for s in samples})
    for bench, method in keys:
        rows = [s for s in samples if s["benchmark"] == bench and s["method"] == method]
        per_budget = []
        for budget in sorted({s["budget"] for s in rows}):
            br = [s for s in rows if s["budget"] == budget]
            correct = [s["correct"] for s in br]
            lo, hi = bootstrap_ci(correct, n_boot, seed)
            per_budget.append({
                "budget": budget, "n": len(br), "accuracy": accuracy(correct), "ci95": [lo, hi],
                "n_ungraded": sum(c is None for c in correct),
                "avg_thinking_tokens": float(np.mean([s["thinking_tokens"] for s in br])),
                "max_thinking_tokens": int(max(s["thinking_tokens"] for s in br)),
                "min_thinking_tokens": br[0].get("min_thinking_tokens"),
                "within_budget": control_per_sample([s["thinking_tokens"] for s in br], [budget] * len(br),
                                                    [s.get("min_thinking_tokens") for s in br]),
                # cut by the budget or by the model's context (the context ones also counted apart)
                "forced_stops": sum(bool(s.get("forced_stop")) for s in br),
                "context_stops": sum(s.get("stop_reason") == "context" for s in br),
                # rejection sampling: rows that kept an unfitting draw, by reason
                "gave_up": {why: sum(s.get("gave_up") == why for s in br)
                            for why in sorted({s["gave_up"] for s in br if s.get("gave_up")})},
                "continuations": sum(int(s.get("continuations") or 0) for s in br),
                "draws": {"mean": float(np.mean([int(s.get("draws") or 1) for s in br])),
                          "max": int(max(int(s.get("draws") or 1) for s in br))},
            })
        points = [(b["avg_thinking_tokens"], b["accuracy"]) for b in per_budget]
        slope = scaling(points)
        out.setdefault(bench, {})[method] = {
            "budgets": per_budget,
            "control": control([b["avg_thinking_tokens"] for b in per_budget], [b["budget"] for b in per_budget],
                               [b["min_thinking_tokens"] for b in per_budget]),
            "control_per_sample": control_per_sample([s["thinking_tokens"] for s in rows],
                                                     [s["budget"] for s in rows],
                                                     [s.get("min_thinking_tokens") for s in rows]),
            "scaling": slope,
            "scaling_pp_per_1k_tokens": None if slope is None else slope * 100 * 1000,
            "performance": performance(points),
        }
    return out


def markdown_table(summary: dict[str, Any]) -> str:
    """One row per benchmark, method and budget, then the s1 metrics per method."""
    lines = ["| benchmark | method | budget | n | accuracy | 95% CI | avg thinking tokens | samples within budget "
             "| forced stops (at context) | gave up |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---|"]
    for bench, methods in summary.items():
        for method, m in methods.items():
            for b in m["budgets"]:
                lo, hi = b["ci95"]
                gave_up = ", ".join(f"{k}: {v}" for k, v in (b.get("gave_up") or {}).items()) or "-"
                lines.append(f"| {bench} | {method} | {b['budget']} | {b['n']} | {b['accuracy']:.1%} | "
                             f"[{lo:.1%}, {hi:.1%}] | {b['avg_thinking_tokens']:.1f} | {b['within_budget']:.0%} | "
                             f"{b.get('forced_stops', 0)} ({b.get('context_stops', 0)}) | {gave_up} |")
    lines += ["", "| benchmark | method | Control (runs) | Control (samples) | Scaling (pp / 1k tokens) | Performance |",
              "|---|---|---:|---:|---:|---:|"]
    for bench, methods in summary.items():
        for method, m in methods.items():
            sc = m["scaling_pp_per_1k_tokens"]
            lines.append(f"| {bench} | {method} | {m['control']:.0%} | {m['control_per_sample']:.0%} | "
                         f"{'n/a' if sc is None else f'{sc:.2f}'} | "
                         f"{m['performance']:.1%} |")
    return "\n".join(lines) + "\n"


def score_from_summary(summary: dict[str, Any], metric: str) -> float:
    """One number from an evaluation summary ({benchmark: {method: {...}}}).

    ``accuracy``: mean over benchmarks of the first method's accuracy at the largest budget;
    ``performance``: mean over benchmarks of the first method's best accuracy over budgets (s1's
    "performance"); anything else is a dotted path into the summary, e.g.
    ``math500.budget_forcing.performance``.
    """
    if metric in ("accuracy", "performance"):
        if not summary:
            raise KeyError("evaluation summary is empty: no benchmark produced samples")
        values = []
        for bench, methods in summary.items():
            m = next(iter(methods.values()))
            values.append(m["budgets"][-1]["accuracy"] if metric == "accuracy" else m["performance"])
        return float(sum(values) / len(values))
    node: Any = summary
    for part in metric.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"evaluation summary has no {metric!r} (stopped at {part!r}); keys: "
                           f"{list(node) if isinstance(node, dict) else type(node).__name__}")
        node = node[part]
    return float(node)
