"""Conformance: decontamination.

s1 (data/decontaminate_util.py, data/collect_data.py ``decontaminate_train_data``, n=8):
lowercase the text, split it on whitespace, and drop any training row that shares one 8-gram
with any evaluation problem; no exemption for common phrases. s1ray's default (``distinctive``)
exempts common phrasing, but must never unflag copies of one evaluation problem, however many
the pool holds.
"""

import pyarrow as pa
import pytest

from s1ray.curate.config import DecontamConfig
from s1ray.curate.decontam import build_index, decontam_features, find_contamination
from s1ray.records import make_record, to_table

AIME24 = ("Every morning Aya goes for a $9$-kilometer-long walk and stops at a coffee shop afterwards. "
          "When she walks at a constant speed of $s$ kilometers per hour, the walk takes her 4 hours, "
          "including $t$ minutes spent in the coffee shop. When she walks $s+2$ kilometers per hour, the "
          "walk takes her 2 hours and 24 minutes, including $t$ minutes spent in the coffee shop. Suppose "
          "Aya walks at $s+\\frac{1}{2}$ kilometers per hour. Find the number of minutes the walk takes "
          "her, including the $t$ minutes spent in the coffee shop.")
EVAL = {"aime24": [AIME24, "Find the largest prime factor of the number of positive divisors of $2024^2$, "
                            "counting one as a divisor."]}
REWORDED = "Each" + AIME24[len("Every"):]  # first word changed
OTHER = ["A train travels 300 miles in 5 hours. What is its average speed in miles per hour?",
         "How many positive integers less than 1000 are divisible by 7 but not by 11?",
         "Find the remainder when $3^{100}$ is divided by 13."]


def _labels(pool, cfg):
    index = build_index(EVAL, cfg)
    recs = [make_record(source="pool", origin=f"f:{i}", question=q) for i, q in enumerate(pool)]
    t = to_table(recs)
    t = t.append_column("row_index", pa.array(range(len(recs)), pa.int64()))
    return list(find_contamination(decontam_features(t, index, cfg), index, cfg, t.num_rows)["labels"])


FIRST_WORDS = ["Each", "Some", "One", "That", "This", "Any"]


@pytest.mark.parametrize("copies", [1, 3, 4, 5, 6])
@pytest.mark.parametrize("rule", ["distinctive", "s1"])
def test_every_copy_of_an_eval_problem_is_flagged_however_many(copies, rule):
    """The issue's case: an AIME24 problem with its first word changed, put in a small pool 1, 3, 4,
    5 (and 6) times, dedup off. Before the fix, 4 and more copies made every n-gram of the problem
    "common" (> max_pool_df pool rows) and none of the copies was flagged."""
    pool = [w + AIME24[len("Every"):] for w in FIRST_WORDS[:copies]] + OTHER
    assert _labels(pool, DecontamConfig(rule=rule)) == ["aime24"] * copies + [""] * len(OTHER)


def test_identical_copies_are_flagged():
    pool = [REWORDED] * 5 + OTHER
    assert _labels(pool, DecontamConfig()) == ["aime24"] * 5 + [""] * len(OTHER)


def test_copies_do_not_make_a_partial_quote_common():
    """Copies never count towards the pool frequency: a row quoting a third of the problem stays
    flagged when five full copies sit beside it (it would be exempted if they counted)."""
    quote = "Riddle: " + " ".join(AIME24.split()[1:31]) + " ... and so on, about a very different walk."
    pool = [w + AIME24[len("Every"):] for w in FIRST_WORDS[:5]] + [quote] + OTHER
    assert _labels(pool, DecontamConfig())[5] == "aime24"


def test_s1_rule_is_any_shared_whitespace_8gram_without_exemption():
    """s1: one shared 8-gram is enough, even if it is common phrasing found in many pool rows."""
    phrase = "minutes spent in the coffee shop. when she walks"  # 8 whitespace words of AIME24, punctuation kept
    pool = [f"Question {i}: a puzzle about {phrase} slowly with {i} friends." for i in range(6)]
    assert _labels(pool, DecontamConfig(rule="s1")) == ["aime24"] * 6
    # s1ray's default treats an 8-gram found in > max_pool_df pool rows as boilerplate:
    assert _labels(pool, DecontamConfig()) == [""] * 6


def test_s1_rule_splits_on_whitespace_only():
    """s1's words keep their punctuation: '$x$,' != 'x', so a copy without the LaTeX dollars and
    punctuation shares no 8-gram with the problem under s1's rule; s1ray's word runs catch it."""
    problem = "Let $x$, $y$ be reals; if $x+y=10$, and $xy=21$, then find $x^2+y^2$ and also $x^3+y^3$."
    stripped = "Let x y be reals if x+y=10 and xy=21 then find x^2+y^2 and also x^3+y^3"
    for cfg, want in ((DecontamConfig(rule="s1"), [""]), (DecontamConfig(), ["alg"])):
        index = build_index({"alg": [problem]}, cfg)
        t = to_table([make_record(source="pool", origin="f:0", question=stripped)])
        t = t.append_column("row_index", pa.array([0], pa.int64()))
        assert list(find_contamination(decontam_features(t, index, cfg), index, cfg, 1)["labels"]) == want


def test_s1_rule_has_no_exact_match_for_short_problems():
    """s1 has no exact-match rule: an evaluation problem shorter than 8 words is never caught."""
    short = {"mini": ["Simplify $\\sqrt{242}$."]}
    for cfg, want in ((DecontamConfig(rule="s1"), [""]), (DecontamConfig(), ["mini"])):
        index = build_index(short, cfg)
        recs = [make_record(source="pool", origin="f:0", question="Simplify $\\sqrt{242}$.")]
        t = to_table(recs).append_column("row_index", pa.array([0], pa.int64()))
        assert list(find_contamination(decontam_features(t, index, cfg), index, cfg, 1)["labels"]) == want
