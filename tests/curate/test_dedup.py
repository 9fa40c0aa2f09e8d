"""Exact and math-aware near dedup: what is merged, what stays, which copy is kept."""

import pyarrow as pa
import pytest

from s1ray.curate.config import CurateConfig, DedupConfig
from s1ray.curate.dedup import dedup_features, find_duplicates, score_dedup
from s1ray.curate.quality import quality_columns
from s1ray.records import make_record, to_table

BASE = ("A farmer has a rectangular field that is 120 meters long and 80 meters wide. He wants to build a "
        "fence around the field and also divide it into two equal parts with a fence parallel to the shorter "
        "side. How many meters of fence does he need in total?")
OTHER = ("Let $f(x) = x^3 - 6x^2 + 11x - 6$. Find the sum of the squares of the roots of $f$, and then "
         "compute the product of all real roots of the polynomial $f(x) - 6$ as a common fraction.")


def _table(questions, sources=None, answers=None):
    recs = [make_record(source=(sources or ["s"] * len(questions))[i], origin=f"f:{i}", question=q,
                        answer=(answers[i] if answers else "1")) for i, q in enumerate(questions)]
    t = to_table(recs)
    return quality_columns(t.append_column("row_index", pa.array(range(len(recs)), pa.int64())))


def _dups(questions, cfg=None, **kw):
    cfg = cfg or CurateConfig(sources=[])
    t = _table(questions, **kw)
    found = find_duplicates(dedup_features(t, cfg), cfg.dedup)
    kinds = {0: "", 1: "exact", 2: "near"}
    return [kinds[int(k)] for k in found["kind"]], list(found["dup_of"])


def test_exact_duplicates_ignore_case_whitespace_and_latex_spacing():
    qs = [BASE, BASE.upper(), BASE.replace(" ", "  ").replace("meters", "meters\n"), OTHER,
          OTHER.replace("$f(x) = x^3", "$f(x)\\,=\\,x^3")]
    kind, dup_of = _dups(qs)
    assert kind == ["", "exact", "exact", "", "exact"]
    assert dup_of == [-1, 0, 0, -1, 3]


def test_rewording_by_a_word_or_two_is_a_near_duplicate():
    qs = [BASE,
          BASE.replace("How many meters", "How many total meters").replace(" in total?", "?"),
          BASE.replace("He wants to build", "He plans to build"),
          OTHER.replace("Find the sum", "Determine the sum").replace("and then compute", "then compute")]
    kind, dup_of = _dups(qs + [OTHER])
    assert kind[:3] == ["", "near", "near"] and dup_of[1:3] == [0, 0]
    # the OTHER pair: the first in read order (row 3) is kept, row 4 is its near copy
    assert kind[3:] == ["", "near"] and dup_of[4] == 3


def test_number_changed_variants_both_stay():
    qs = [BASE, BASE.replace("120", "150"), BASE.replace("80 meters wide", "60 meters wide"),
          "Solve the equation: $8x - 14 = 4x + 3$", "Solve the equation: $5x - 14 = 4x + 3$",
          OTHER, OTHER.replace("x^3 - 6x^2", "x^3 + 6x^2")]
    kind, _ = _dups(qs)
    assert kind == [""] * len(qs)
    # The math key is what keeps them apart: without it the number variants merge.
    loose = CurateConfig(sources=[], dedup=DedupConfig(math_aware=False))
    kind_loose, _ = _dups(qs, cfg=loose)
    assert kind_loose.count("near") >= 2


def test_kept_copy_is_deterministic_and_prefers_quality_passing_rows():
    qs = [BASE, BASE.lower(), BASE.replace("He wants to build", "He plans to build")]
    # row 0 has no answer -> fails quality; the first passing copy (row 1) is kept
    kind, dup_of = _dups(qs, answers=[None, "1", "1"])
    assert kind == ["exact", "", "near"] and dup_of == [1, -1, 1]
    assert _dups(qs, answers=[None, "1", "1"]) == (kind, dup_of)


def test_cross_source_duplicates_keep_the_earlier_source():
    kind, dup_of = _dups([OTHER, BASE, BASE + " "], sources=["a", "b", "c"])
    assert kind == ["", "", "exact"] and dup_of[2] == 1


def test_score_dedup_on_ray_data(ray_local):
    qs = [BASE, OTHER, BASE.lower(), BASE.replace("120", "150"), OTHER.replace("Find the sum", "Determine the sum")]
    cfg = CurateConfig(sources=[], batch_size=2)  # several batches: the global step must see them all
    t = _table(qs)
    ds = ray_local.data.from_arrow([t.slice(i, 2) for i in range(0, t.num_rows, 2)])
    out = pa.concat_tables(ray_local.get(score_dedup(ds, cfg).to_arrow_refs())).sort_by("row_index")
    assert out["dup_kind"].to_pylist() == ["", "", "exact", "", "near"]
    assert out["dup_of"].to_pylist() == [-1, -1, 0, -1, 1]
    assert out["dup_similarity"].to_pylist()[2] == pytest.approx(1.0)
    assert set(t.column_names) < set(out.column_names)  # columns are only added


def test_one_word_content_changes_are_distinct_questions():
    pairs = [("Let $f(x)$ and $g(x)$ be odd functions. Is $f(x) g(x)$ even, odd, or neither? Enter odd, even or neither.",
              "Let $f(x)$ and $g(x)$ be even functions. Is $f(x) g(x)$ even, odd, or neither? Enter odd, even or neither."),
             ("Determine the number of ways to arrange the letters of the word ELLIPSE in a row on the table.",
              "Determine the number of ways to arrange the letters of the word CEASE in a row on the table."),
             ("The sum of two numbers is 25 and their difference is 11. What is the larger of the two numbers?",
              "The sum of two numbers is 25 and their difference is 11. What is the smaller of the two numbers?")]
    kind, _ = _dups([q for pair in pairs for q in pair])
    assert kind == [""] * 6
    loose = CurateConfig(sources=[], dedup=DedupConfig(math_aware=False, threshold=0.5))
    assert _dups([q for pair in pairs for q in pair], cfg=loose)[0].count("near") >= 2
