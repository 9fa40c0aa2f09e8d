"""Conformance: the quality preset ``rules: s1`` is s1's rule set.

s1 (data/filter.ipynb, cell 7) keeps a question when it holds none of ``[asy]``, ``![Image]``,
``p{i}.`` for i in 1..999, or a match of ``\\*\\*(?=.*\\d)[^\\s\\]]*\\*\\*``; a question holding
``[asy]`` is kept anyway when its source_type contains "AIME". All checks are case-sensitive.
"""

import re

import pyarrow as pa

from s1ray.curate.config import QualityConfig
from s1ray.curate.quality import quality_columns, quality_reason
from s1ray.records import make_record, to_table

REF = {"answer": "7", "solution": "It is 7."}

# (question, source_type, s1 keeps it?) -- each row one facet of cell 7.
POOL = [
    ("Find the area of the shaded region. [asy] draw((0,0)--(1,1)); [/asy]", "qq8933/AIME_1983_2024", True),
    ("Find the area of the shaded region. [asy] draw((0,0)--(1,1)); [/asy]", "qfq/openaimath/Geometry", False),
    ("AIME figure with both: [asy] draw(c); [/asy] and ![Image](x.png) shown", "qq8933/AIME_1983_2024", True),
    ("Case matters for s1: [ASY] draw(c); [/ASY] is not its pattern at all here.", "qfq/openaimath/Geometry", True),
    ("Look at the picture ![Image](fig.png) and find the length of side AB.", "olympiads", False),
    ("p12. Find all primes p such that p+2 is also prime and p is odd.", "aops_forum", False),
    ("In step1. we add the numbers; what is the total of the two numbers?", "aops_forum", False),  # 'p1.'
    ("Problem p1000. has no p{i}. for i below 1000, so it stays in the pool.", "aops_forum", True),
    ("Problem p0. is not numbered from one, so it stays in the pool too.", "aops_forum", True),
    ("**3.** Find the sum of all positive divisors of twelve.", "olympiads", False),
    ("**Problem 3** has a space inside the bold run, so s1's pattern does not match it.", "olympiads", True),
    ("**Note** the bold run has no digit but 5 follows it on the line.", "olympiads", False),
    ("**Note** the bold run has no digit\nand the digit 5 is on the next line.", "olympiads", True),
    ("See the figure below and find the radius of the inscribed circle.", "olympiads", True),  # s1ray-only rule
    ("Sum?", "olympiads", True),  # s1 has no length rule
]


def _cell7_keeps(question: str, source_type: str) -> bool:
    """Oracle: s1's cell 7 condition, written out as s1 states it."""
    if ("[asy]" not in question and "![Image]" not in question
            and not any(f"p{i}." in question for i in range(1, 1000))
            and not re.search(r"\*\*(?=.*\d)[^\s\]]*\*\*", question)):
        return True
    return "[asy]" in question and "AIME" in source_type


def _batch(rows):
    recs = [make_record(source="pool", origin=f"f:{i}", question=q, source_type=st, **REF)
            for i, (q, st, _) in enumerate(rows)]
    t = to_table(recs)
    return quality_columns(t.append_column("row_index", pa.array(range(len(recs)), pa.int64())))


def test_s1_rules_keep_exactly_what_s1_keeps():
    reasons = quality_reason(_batch(POOL), QualityConfig(rules="s1"))
    assert [keep for _, _, keep in POOL] == [_cell7_keeps(q, st) for q, st, _ in POOL]  # labels are right
    assert [r == "" for r in reasons] == [keep for _, _, keep in POOL]
    assert list(reasons[[1, 4, 5, 9]]) == ["asy_diagram", "image", "numbering", "bold_digit"]


def test_s1ray_default_differs_from_s1():
    """s1ray's default drops AIME [asy] (no whitelist), figure references, short questions; keeps 'step1.'."""
    s1 = quality_reason(_batch(POOL), QualityConfig(rules="s1"))
    own = quality_reason(_batch(POOL), QualityConfig())
    assert QualityConfig().rules == "s1ray"
    assert s1[0] == "" and own[0] == "asy_diagram"
    assert s1[13] == "" and own[13] == "missing_figure"
    assert s1[14] == "" and own[14] == "too_short"
    assert s1[6] == "numbering" and own[6] == ""


def test_s1_rules_still_drop_missing_features():
    """s1 dropped rows with any missing feature (cells 1-4): ``require`` applies under ``rules: s1``."""
    recs = [make_record(source="pool", origin="f:0", question="Find the sum of the first ten odd numbers.")]
    t = to_table(recs)
    b = quality_columns(t.append_column("row_index", pa.array([0], pa.int64())))
    assert list(quality_reason(b, QualityConfig(rules="s1", require=["thinking"]))) == ["missing_thinking"]


def test_s1_rules_work_on_a_pool_scored_before_the_s1_flags():
    """A cached scored pool without the flag_s1_* columns gets them computed, with the same verdicts."""
    b = _batch(POOL)
    old = b.drop_columns([c for c in b.column_names if c.startswith("flag_s1_")])
    assert list(quality_reason(old, QualityConfig(rules="s1"))) == list(quality_reason(b, QualityConfig(rules="s1")))
