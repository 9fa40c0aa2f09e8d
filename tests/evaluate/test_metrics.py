"""Metrics equal hand-computed values on small tables."""

from __future__ import annotations

import math

import pytest

from s1ray.evaluate.metrics import (accuracy, bootstrap_ci, control, control_per_sample, markdown_table,
                                   performance, scaling, score_from_summary, summarize)


def test_accuracy_counts_ungraded_as_wrong():
    assert accuracy([True, False, None, True]) == 0.5
    assert math.isnan(accuracy([]))


def test_control_hand_computed():
    # within budget: 50<=100 yes, 120<=100 no, 100<=100 yes, 300<=200 no
    assert control_per_sample([50, 120, 100, 300], [100, 100, 100, 200]) == 0.5
    # with a minimum: 50 is below the minimum of 60
    assert control_per_sample([50, 80], [100, 100], [60, 60]) == 0.5
    # s1's Control is over runs: their average thinking (80 <= 100, 205 > 200)
    assert control([80.0, 205.0], [100, 200]) == 0.5


def test_scaling_is_average_pairwise_slope():
    points = [(100, 0.2), (200, 0.4), (400, 0.5)]
    # slopes: (0.4-0.2)/100 = 0.002, (0.5-0.2)/300 = 0.001, (0.5-0.4)/200 = 0.0005
    assert scaling(points) == pytest.approx((0.002 + 0.001 + 0.0005) / 3)
    assert scaling(list(reversed(points))) == pytest.approx(scaling(points))  # order free
    assert scaling([(100, 0.5), (200, 0.3)]) == pytest.approx(-0.002)  # worse with more thinking
    assert scaling([(100, 0.5), (100, 0.7)]) is None  # no width, no slope
    assert scaling([(100, 0.5)]) is None


def test_performance_is_best_accuracy():
    assert performance([(100, 0.2), (200, 0.6), (400, 0.5)]) == 0.6


def test_bootstrap_ci():
    assert bootstrap_ci([True] * 10) == (1.0, 1.0)
    lo, hi = bootstrap_ci([True, False] * 50, n_samples=2000, seed=1)
    # binomial sd of a mean of 100 fair coins is 0.05: the 95% interval is about +-0.1
    assert 0.38 <= lo <= 0.42 and 0.58 <= hi <= 0.62
    assert bootstrap_ci([True, False, True], seed=3) == bootstrap_ci([True, False, True], seed=3)


def _s(budget, tokens, correct, method="budget_forcing", bench="b"):
    return {"benchmark": bench, "method": method, "budget": budget, "thinking_tokens": tokens, "correct": correct}


def test_summarize_small_table():
    samples = [
        _s(100, 80, True), _s(100, 100, False), _s(100, 90, None), _s(100, 50, False),  # acc .25, avg 80
        _s(200, 150, True), _s(200, 200, True), _s(200, 170, False), _s(200, 160, True),  # acc .75, avg 170
        _s(100, 150, True, "token_conditional"), _s(100, 90, False, "token_conditional"),  # 1 of 2 within
        _s(200, 190, True, "token_conditional"), _s(200, 250, True, "token_conditional"),
    ]
    out = summarize(samples, n_boot=200)
    bf = out["b"]["budget_forcing"]
    assert [b["accuracy"] for b in bf["budgets"]] == [0.25, 0.75]
    assert [b["avg_thinking_tokens"] for b in bf["budgets"]] == [80.0, 170.0]
    assert [b["n_ungraded"] for b in bf["budgets"]] == [1, 0]
    assert bf["control"] == 1.0
    assert bf["scaling"] == pytest.approx((0.75 - 0.25) / 90)
    assert bf["scaling_pp_per_1k_tokens"] == pytest.approx(50 / 90 * 1000)
    assert bf["performance"] == 0.75
    tc = out["b"]["token_conditional"]
    # s1's Control counts runs: both runs average over their budget (120 > 100, 220 > 200) ...
    assert tc["control"] == 0.0
    assert tc["control_per_sample"] == 0.5  # ... while half the samples are within (90, 190)
    assert bf["control_per_sample"] == 1.0
    assert [b["avg_thinking_tokens"] for b in tc["budgets"]] == [120.0, 220.0]
    assert tc["scaling"] == pytest.approx((1.0 - 0.5) / 100)
    table = markdown_table(out)
    assert "| b | budget_forcing | 100 | 4 | 25.0% |" in table
    assert "| b | token_conditional | 0% | 50% |" in table


def test_score_from_summary_aggregates_and_names_missing_key():
    summary = {"b1": {"budget_forcing": {"budgets": [{"accuracy": 0.2}, {"accuracy": 0.4}], "performance": 0.4}},
               "b2": {"budget_forcing": {"budgets": [{"accuracy": 0.6}, {"accuracy": 0.5}], "performance": 0.6}}}
    assert score_from_summary(summary, "accuracy") == pytest.approx(0.45)  # largest budget, mean over benchmarks
    assert score_from_summary(summary, "performance") == pytest.approx(0.5)
    assert score_from_summary({"a": {"b": 0.5}}, "a.b") == 0.5
    with pytest.raises(KeyError, match="no 'a.c'"):
        score_from_summary({"a": {"b": 0.5}}, "a.c")
