"""Conformance: forced inclusions and domain sampling, criterion ``s1`` (what built s1K) vs
``algorithm1`` (the paper's Algorithm 1).

s1 (data/filter.ipynb cells 14, 17, 21): forced = Gemini's attempt correct AND (source_type is
``Idavidrein/gpqa`` or ``qq8933/AIME_1983_2024``, or contains ``qfq/openaimath`` with trace length
> 5,600). Then, while fewer than 700 of 1,000 are selected, a domain is drawn uniformly; after that
from the domain counts of AIME and GPQA questions, GPQA counts scaled by 0.5 x n_AIME / n_GPQA and
truncated to integers. Within a domain the weight is 2^-rank, rank 0 = the longest trace; the pick
leaves its domain, an emptied domain leaves both distributions. The domain lists hold every
question, forced ones too: drawing a forced question again adds nothing. The paper's Algorithm 1
draws domains uniformly throughout.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from s1ray.curate.selection import (SelectConfig, SelectionParams, benchmark_domain_weights, forced_mask,
                                    select_subset)

S1K_CONFIG = Path(__file__).parents[2] / "jobs" / "configs" / "select_s1k.yaml"
AIME, GPQA, MATH = "qq8933/AIME_1983_2024", "Idavidrein/gpqa", "qfq/openaimath/Algebra"


def _pool(spec):
    """spec: list of (domain, source_type, count, correct); lengths decrease within the pool."""
    rows = []
    for dom, src, count, correct in spec:
        for _ in range(count):
            rows.append({"domain": dom, "source_type": src, "attempt_correct": correct})
    df = pd.DataFrame(rows)
    df["id"] = [f"q{i:05d}" for i in range(len(df))]
    df["thinking_tokens"] = np.arange(len(df))[::-1] * 10 + 100
    return df


def _s1k_params() -> SelectionParams:
    return SelectConfig.model_validate(yaml.safe_load(S1K_CONFIG.read_text())).params


def test_forced_inclusions_follow_cell_14():
    pool = pd.DataFrame({
        "id": list("abcdefgh"),
        "source_type": [AIME, GPQA, AIME, MATH, MATH, "qfq/openaimath/Geometry", "olympiads", GPQA],
        "attempt_correct": [True, True, False, True, True, True, True, True],
        "thinking_tokens": [10, 10, 10, 5601, 5600, 9000, 9000, 10],
        "domain": ["x"] * 8})
    want = [True, True, False, True, False, True, False, True]
    assert forced_mask(pool, _s1k_params()).tolist() == want
    assert forced_mask(pool).tolist() == want  # the defaults agree on this pool


def test_benchmark_distribution_weighs_gpqa_half_of_aime_with_truncation():
    pool = _pool([("X", AIME, 4, False), ("Y", GPQA, 8, False), ("Z", GPQA, 1, False), ("W", MATH, 50, False)])
    domains = pool["domain"].to_numpy()
    # ratio 0.5 x 4 / 9: Y -> int(8 x 0.222) = 1, Z -> int(0.222) = 0 (dropped); X keeps 4.
    assert benchmark_domain_weights(pool, domains, _s1k_params()) == {"X": 0.8, "Y": 0.2}


def _late_draws(criterion, seeds, n=100, **params):
    pool = _pool([("X", AIME, 200, False), ("Y", GPQA, 400, False)]
                 + [(f"D{k}", MATH, 200, False) for k in range(8)])
    late = []
    for seed in seeds:
        sub = select_subset(pool, criterion, n, seed, SelectionParams(**params))
        late += sub["domain"][sub["selection_rank"] >= 70].tolist()
    return pd.Series(late)


def test_s1_draws_uniformly_until_700_then_from_aime_gpqa_domains():
    """Scaled to size 100 (uniform_fraction 0.7): draws 70..99 come from X (AIME) and Y (GPQA) only,
    X:Y = 200 : int(400 x 0.5 x 200/400) = 200:100, so X gets 2/3 of them."""
    late = _late_draws("s1", range(20))
    assert set(late) == {"X", "Y"}
    assert 0.58 < (late == "X").mean() < 0.75
    early = []
    pool = _pool([("X", AIME, 200, False), ("Y", GPQA, 400, False)] + [(f"D{k}", MATH, 200, False) for k in range(8)])
    for seed in range(20):
        sub = select_subset(pool, "s1", 100, seed)
        early += sub["domain"][sub["selection_rank"] < 70].tolist()
    assert 0.05 < (pd.Series(early) == "X").mean() < 0.15  # uniform over 10 domains


def test_algorithm1_draws_uniformly_throughout():
    late = _late_draws("algorithm1", range(20))
    assert len(set(late)) == 10 and (late == "X").mean() < 0.2


def test_within_a_domain_weights_are_two_to_the_minus_rank_longest_first():
    pool = _pool([("D", MATH, 6, False)])  # row 0 is the longest
    picks = pd.Series([select_subset(pool, "s1", 1, seed)["id"][0] for seed in range(800)]).value_counts(normalize=True)
    assert abs(picks["q00000"] - 0.5) < 0.06 and abs(picks["q00001"] - 0.25) < 0.05 and abs(picks["q00002"] - 0.125) < 0.04


def test_an_emptied_domain_leaves_both_distributions():
    pool = _pool([("X", AIME, 3, False), ("Y", GPQA, 400, False), ("Z", MATH, 1, False), ("D", MATH, 300, False)])
    for seed in range(10):
        sub = select_subset(pool, "s1", 100, seed)
        assert len(sub) == 100 and sub["id"].is_unique
        assert (sub["domain"] == "X").sum() == 3 and (sub["domain"] == "Z").sum() == 1
        assert set(sub["domain"][sub["selection_rank"] >= 70]) <= {"X", "Y"}


def test_s1_domain_lists_hold_the_forced_questions():
    """Domain F holds 3 forced questions (its longest) and one other; G holds 50 others. With one
    slot left, s1 often draws F's forced questions again (adding nothing, removing them) before
    a new question comes, so F's non-forced question is picked far less than half the time;
    Algorithm 1 leaves forced questions out, so F's only candidate wins half the draws."""
    pool = _pool([("F", AIME, 3, True), ("F", "olympiads", 1, False), ("G", "olympiads", 50, False)])
    assert forced_mask(pool).tolist()[:4] == [True, True, True, False]  # and rows 0-2 are F's longest
    share = {c: np.mean([select_subset(pool, c, 4, seed, SelectionParams(uniform_fraction=1.0))["id"][3] == "q00003"
                         for seed in range(300)]) for c in ("s1", "algorithm1")}
    assert 0.4 < share["algorithm1"] < 0.6
    assert share["s1"] < 0.3


@pytest.mark.parametrize("criterion", ["s1", "algorithm1"])
def test_forced_rows_come_first_in_both(criterion):
    pool = _pool([("X", AIME, 5, True), ("D", MATH, 100, False)])
    sub = select_subset(pool, criterion, 20, 0)
    assert sub["selection_forced"].tolist() == [True] * 5 + [False] * 15
    assert set(sub["id"][:5]) == {f"q{i:05d}" for i in range(5)}
