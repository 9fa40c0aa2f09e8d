"""Quality rules: each flag fires on its pattern, the filter names the reason, thresholds are config."""

import pyarrow as pa

from s1ray.curate.config import QualityConfig
from s1ray.curate.quality import quality_columns, quality_reason
from s1ray.records import make_record, to_table

ANSWER = {"answer": "4", "solution": "2+2=4"}


def _batch(*rows):
    recs = [make_record(source=r.pop("source", "src"), origin=f"f:{i}", **r) for i, r in enumerate(rows)]
    t = to_table(recs)
    return quality_columns(t.append_column("row_index", pa.array(range(len(recs)), pa.int64())))


def _reasons(batch, **cfg):
    return list(quality_reason(batch, QualityConfig(**cfg)))


def test_clean_question_passes_and_scores_are_added():
    b = _batch({"question": "What is two plus two, written as a number?", **ANSWER})
    assert _reasons(b) == [""]
    assert b["q_words"].to_pylist() == [9]
    assert b["has_answer"].to_pylist() == [True] and b["has_thinking"].to_pylist() == [False]


def test_too_short_uses_min_words_threshold():
    b = _batch({"question": "Compute $2+2$.", **ANSWER}, {"question": "Please compute $2+2$ now.", **ANSWER})
    assert _reasons(b, min_words=3) == ["too_short", ""]
    assert _reasons(b, min_words=1) == ["", ""]  # same scores, another threshold


def test_required_fields_are_configurable():
    b = _batch({"question": "Find the sum of all odd primes below ten.", "answer": "15"},
               {"question": "Find the sum of all even primes below ten.", "thinking": ["Only 2."], "answer": "2",
                "attempt": "2"})
    assert _reasons(b) == ["", ""]  # raw pool: an answer is enough
    assert _reasons(b, require=["thinking", "answer"]) == ["missing_thinking", ""]
    assert _reasons(b, require=["attempt"]) == ["missing_attempt", ""]
    nothing = _batch({"question": "Find the sum of all odd primes below ten."})
    assert _reasons(nothing) == ["missing_answer_or_solution"]


def test_api_error_text_in_trace_or_attempt():
    b = _batch({"question": "Find the sum of all odd primes below ten.", "thinking": ["Error code: 503 - overloaded"],
                **ANSWER},
               {"question": "Find the sum of all odd primes below ten.", "attempt": "RateLimitError: rate limit exceeded",
                **ANSWER},
               {"question": "Find the error in the following argument about primes.", "thinking": ["fine"], **ANSWER})
    assert _reasons(b) == ["api_error", "api_error", ""]
    assert _reasons(b, drop_api_error=False) == ["", "", ""]


def test_asy_dropped_unless_source_whitelisted():
    q = "In the diagram below, find the area.\n[asy]\ndraw((0,0)--(1,1));\n[/asy]"
    b = _batch({"question": q, "source": "math", **ANSWER}, {"question": q, "source": "olympiad", **ANSWER})
    assert b["flag_asy"].to_pylist() == [True, True]
    assert _reasons(b) == ["asy_diagram", "asy_diagram"]
    assert _reasons(b, asy_whitelist=["math"]) == ["", "asy_diagram"]
    # the [asy] code IS the figure: no missing-figure flag
    assert b["flag_missing_figure"].to_pylist() == [False, False]


def test_missing_figure_references():
    b = _batch({"question": "As shown in the figure, triangle ABC is right-angled. Find AB.", **ANSWER},
               {"question": "Look at the image below and count the cubes in it.", **ANSWER},
               {"question": "![plot](fig1.png) What is the slope of the line?", **ANSWER},
               {"question": "Draw a figure of a square with side 2 and find its area.", **ANSWER})
    assert b["flag_missing_figure"].to_pylist() == [True, True, True, False]
    assert _reasons(b) == ["missing_figure"] * 3 + [""]


def test_inconsistent_numbering():
    b = _batch({"question": "p1. Find x if 2x = 4.\np2. Find y if 3y = 9.", **ANSWER},
               {"question": "Problem 1. Find x.\nProblem 2. Find y if y is the double of x.", **ANSWER},
               {"question": "Answer both parts:\n1. Find x if 2x = 4.\n2. Find y if 3y = 9.", **ANSWER})
    assert b["flag_numbering"].to_pylist() == [True, True, False]
    assert _reasons(b) == ["numbering", "numbering", ""]


def test_first_reason_wins():
    b = _batch({"question": "p1. [asy] x", "thinking": ["API error"]})
    assert _reasons(b, min_words=4, require=["thinking", "answer"]) == ["too_short"]
    assert _reasons(b, min_words=1, require=["thinking", "answer"]) == ["missing_answer"]


ZH = ["小明有15个苹果，他给了小红6个，又买了8个。小明现在有多少个苹果？",
      "学校买了5箱粉笔，每箱有24盒，用了38盒，还剩多少盒？",
      "一辆汽车每小时行驶60千米，3小时行驶多少千米？"]


def test_chinese_questions_pass_the_length_rule():
    b = _batch(*({"question": q, **ANSWER} for q in ZH), {"question": "计算1+1", **ANSWER})
    words = b["q_words"].to_pylist()
    # Every Han character is a word, numbers are words, full-width punctuation is not.
    assert words[0] == 26 + 3 and words[1] == 19 + 3  # Han characters + numbers
    assert _reasons(b) == ["", "", "", ""]
    assert _reasons(b, min_words=5) == ["", "", "", "too_short"]


def test_word_counts_of_spaced_text_are_unchanged():
    b = _batch({"question": "  Compute   $2+2$ now.  ", **ANSWER}, {"question": "Größe: café au lait?", **ANSWER},
               {"question": "학교에 학생이 30명 있습니다.", **ANSWER})
    assert b["q_words"].to_pylist()[:2] == [3, 4]
    assert b["q_words"].to_pylist()[2] == 11 + 1  # Hangul syllables count one each (+ the number), the period not


def test_chinese_figure_references_without_the_figure():
    b = _batch({"question": "如图所示，三角形ABC的面积是12平方厘米，求阴影部分的面积。", **ANSWER},
               {"question": "观察下图，数一数一共有多少个正方形？", **ANSWER},
               {"question": "画一个边长是3厘米的正方形，并求出它的面积。", **ANSWER})
    assert b["flag_missing_figure"].to_pylist() == [True, True, False]
    assert _reasons(b) == ["missing_figure", "missing_figure", ""]
