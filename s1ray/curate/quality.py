"""Quality stage after s1: flags for API errors, formatting issues, missing fields, length.

Scoring (:func:`quality_columns`) only *adds* flag and count columns; it needs no
thresholds. The filter (:func:`quality_reason`) turns flags into a named drop reason using
the config (which fields are required, which sources may keep ``[asy]`` diagrams,
``min_words``), so thresholds can change without rescoring. Both work on whole Arrow
batches with pyarrow's RE2 kernels.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from s1ray.config import StrictModel
from s1ray.curate.stage import Stage
from s1ray.curate.text import count_words

Required = Literal["thinking", "attempt", "answer", "solution", "answer_or_solution"]


class QualityConfig(StrictModel):
    """Rule-based quality filter after s1 (Section 2: API errors, formatting issues).

    ``rules`` picks the rule set. ``s1`` is s1's exact one (data/filter.ipynb cell 7): drop a
    question holding ``[asy]`` unless its source_type contains "AIME" (such a question is kept
    whatever else it holds), ``![Image]``, any ``p{i}.`` with i in 1..999, or a match of
    ``\\*\\*(?=.*\\d)[^\\s\\]]*\\*\\*`` (a bold run with a digit later on its line); all
    case-sensitive. ``require`` still applies (s1 dropped rows with missing features);
    ``min_words``, the API-error, missing-figure and numbering rules are s1ray's and are off under
    ``s1``. ``s1ray`` (default) is broader: any figure reference without the figure, AoPS-style
    numbered lists, API-error text, too-short questions, and ``[asy]`` kept only for
    ``asy_whitelist`` sources.
    """

    enabled: bool = True
    rules: Literal["s1ray", "s1"] = "s1ray"
    # Which fields a kept row must have. A raw question pool has no traces yet, so the default
    # only asks for a reference answer or solution; for an s1K-shaped pool add "thinking".
    require: list[Required] = ["answer_or_solution"]
    min_words: int = 3  # shorter questions are dropped as "too_short"
    asy_whitelist: list[str] = []  # sources / source_types whose [asy] diagrams are kept
    drop_missing_figure: bool = True
    drop_numbering: bool = True
    drop_api_error: bool = True

API_ERROR = (
    r"(?i)(\bapi ?error\b|error code: ?\d{3}|rate ?limit(ed| exceeded| reached)|ratelimiterror|"
    r"internal server error|service unavailable|request timed out|exceeded your current quota|"
    r"apiconnectionerror|overloaded_error|\bhttp ?(429|5\d\d)\b|max retries exceeded)"
)
ASY = r"(?i)\[asy\]"
FIGURE_REF = (
    r"(?i)(\b(see|in|on|from) (the |this )?(following |given |accompanying |adjoining |attached )?"
    r"(figure|diagram|picture|image|illustration)s?\b|"
    r"\b(figure|diagram|picture|image|illustration)s? (below|above|shown)|"
    r"\b(shown|pictured|depicted|illustrated) (below|above|in the (figure|diagram|picture|image))|"
    r"\bfig(ure)?\.? ?\d|!\[[^\]]*\]\(|<img\b|\\includegraphics|"
    r"(如|见|下|上|左|右)图|图\s*\d)"  # Chinese: 如图 "as in the figure", 下图 "the figure below", 图1
)
# A figure that is actually present: Asymptote code, TikZ, or a Markdown table.
FIGURE_PRESENT = r"(?i)(\[asy\]|\\begin\{tikzpicture\}|\|\s*:?-{3,})"
# Several problems glued together with "p1." / "pb2." markers (AoPS-style lists).
NUMBERING_MARKER = r"(?m)(^|\s)pb?\d+\s*[.)]\s"
PROBLEM_HEADER = r"(?im)^\s*problem\s+\d+\s*[.:]"

# s1's rule set (data/filter.ipynb cell 7), all case-sensitive. ``p[1-9][0-9]{0,2}\.`` is exactly
# ``any(f"p{i}." in q for i in range(1, 1000))``. The bold rule needs a look-ahead, which RE2 lacks:
# it runs with Python's ``re`` on the rows that hold "**" at all.
S1_ASY = "[asy]"
S1_IMAGE = "![Image]"
S1_NUMBERING = r"p[1-9][0-9]{0,2}\."
S1_BOLD_DIGIT = re.compile(r"\*\*(?=.*\d)[^\s\]]*\*\*")
S1_ASY_KEEP = "AIME"  # an [asy] question whose source_type contains this is kept (whatever else it holds)

# Reasons in the order they are checked; a row gets the first that applies.
REASONS = ("too_short", "missing_thinking", "missing_attempt", "missing_answer", "missing_solution",
           "missing_answer_or_solution", "api_error", "asy_diagram", "missing_figure", "numbering",
           "image", "bold_digit")

SCORE_COLUMNS = {
    "q_chars": "characters in the question",
    "q_words": "words in the question (whitespace-separated; a Chinese/Japanese/Korean/Thai character is a word)",
    "has_thinking": "at least one non-empty thinking trace",
    "has_attempt": "non-empty teacher attempt",
    "has_answer": "non-empty reference answer",
    "has_solution": "non-empty reference solution",
    "flag_api_error": "API-error text in a trace or attempt",
    "flag_asy": "question holds an [asy] diagram",
    "flag_missing_figure": "question refers to a figure/image that is not in the text",
    "flag_numbering": "question is a numbered list of problems (p1. / Problem 1 ... Problem 2)",
    "flag_s1_asy": "s1: question contains '[asy]' (case-sensitive)",
    "flag_s1_image": "s1: question contains '![Image]'",
    "flag_s1_numbering": "s1: question contains 'p{i}.' for some i in 1..999",
    "flag_s1_bold_digit": "s1: question matches \\*\\*(?=.*\\d)[^\\s\\]]*\\*\\*",
}


def _nonempty(arr: pa.Array) -> pa.Array:
    return pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(arr)), 0), False)


def _match(arr: pa.Array, pattern: str) -> pa.Array:
    return pc.fill_null(pc.match_substring_regex(arr, pattern), False)


def _any_trace(traces: pa.Array, pattern: str | None = None) -> np.ndarray:
    """Per row: some element of the list<string> column is non-empty (and matches ``pattern``)."""
    n = len(traces)
    if isinstance(traces, pa.ChunkedArray):
        traces = traces.combine_chunks()
    flat = traces.flatten()
    if len(flat) == 0:
        return np.zeros(n, bool)
    hit = _nonempty(flat) if pattern is None else pc.and_(_nonempty(flat), _match(flat, pattern))
    parents = pc.list_parent_indices(traces).to_numpy()
    out = np.zeros(n, bool)
    out[parents[hit.to_numpy(zero_copy_only=False)]] = True
    return out


def s1_flags(questions: pa.Array | pa.ChunkedArray) -> dict[str, pa.Array]:
    """s1's four string rules as boolean columns (see :data:`S1_BOLD_DIGIT`)."""
    q = questions.combine_chunks() if isinstance(questions, pa.ChunkedArray) else questions
    bold = _match(q, r"\*\*").to_numpy(zero_copy_only=False).copy()
    if bold.any():
        texts = q.to_pylist()
        for i in np.flatnonzero(bold):
            bold[i] = S1_BOLD_DIGIT.search(texts[i]) is not None
    return {
        "flag_s1_asy": pc.fill_null(pc.match_substring(q, S1_ASY), False),
        "flag_s1_image": pc.fill_null(pc.match_substring(q, S1_IMAGE), False),
        "flag_s1_numbering": _match(q, S1_NUMBERING),
        "flag_s1_bold_digit": pa.array(bold, pa.bool_()),
    }


def quality_columns(batch: pa.Table) -> pa.Table:
    """Add the quality score/flag columns to a batch of canonical records."""
    q = batch["question"].combine_chunks()
    thinking = batch["thinking"].combine_chunks()
    attempt = batch["attempt"].combine_chunks()
    words = count_words(q)
    api = np.asarray(_any_trace(thinking, API_ERROR)) | _match(attempt, API_ERROR).to_numpy(zero_copy_only=False)
    figure = pc.and_(_match(q, FIGURE_REF), pc.invert(_match(q, FIGURE_PRESENT)))
    numbering = pc.or_(_match(q, NUMBERING_MARKER),
                       pc.greater_equal(pc.fill_null(pc.count_substring_regex(q, PROBLEM_HEADER), 0), 2))
    cols = {
        "q_chars": pc.fill_null(pc.utf8_length(q), 0).cast(pa.int32()),
        "q_words": pc.fill_null(words, 0).cast(pa.int32()),
        "has_thinking": pa.array(_any_trace(thinking)),
        "has_attempt": _nonempty(attempt),
        "has_answer": _nonempty(batch["answer"].combine_chunks()),
        "has_solution": _nonempty(batch["solution"].combine_chunks()),
        "flag_api_error": pa.array(api),
        "flag_asy": _match(q, ASY),
        "flag_missing_figure": figure,
        "flag_numbering": numbering,
        **s1_flags(q),
    }
    for name, col in cols.items():
        batch = batch.append_column(name, col)
    return batch


def quality_reason(batch: pa.Table, cfg: QualityConfig) -> np.ndarray:
    """The first quality reason that drops each row ('' = passes), as an object array."""
    n = batch.num_rows
    col = lambda name: batch[name].to_numpy(zero_copy_only=False).astype(bool)  # noqa: E731
    whitelisted = np.isin(batch["source"].to_numpy(zero_copy_only=False), cfg.asy_whitelist) | np.isin(
        batch["source_type"].to_numpy(zero_copy_only=False), cfg.asy_whitelist)
    has = {
        "thinking": col("has_thinking"), "attempt": col("has_attempt"), "answer": col("has_answer"),
        "solution": col("has_solution"),
    }
    has["answer_or_solution"] = has["answer"] | has["solution"]
    missing = [(f"missing_{f}", ~has[f]) for f in ("thinking", "attempt", "answer", "solution",
                                                    "answer_or_solution") if f in cfg.require]
    if cfg.rules == "s1":
        return _s1_reason(batch, missing, whitelisted)
    checks = [("too_short", batch["q_words"].to_numpy() < cfg.min_words)] + missing
    if cfg.drop_api_error:
        checks.append(("api_error", col("flag_api_error")))
    checks.append(("asy_diagram", col("flag_asy") & ~whitelisted))
    if cfg.drop_missing_figure:
        checks.append(("missing_figure", col("flag_missing_figure")))
    if cfg.drop_numbering:
        checks.append(("numbering", col("flag_numbering")))
    reason = np.full(n, "", dtype=object)
    for name, mask in reversed(checks):  # earlier checks win
        reason[mask] = name
    return reason


def _s1_reason(batch: pa.Table, missing: list[tuple[str, np.ndarray]], whitelisted: np.ndarray) -> np.ndarray:
    """s1's cell 7: keep = (none of the four patterns) or ([asy] and "AIME" in source_type)."""
    names = ("flag_s1_asy", "flag_s1_image", "flag_s1_numbering", "flag_s1_bold_digit")
    if all(n in batch.column_names for n in names):
        flags = {n: batch[n].to_numpy(zero_copy_only=False).astype(bool) for n in names}
    else:  # a cached pool scored before these flags existed: compute them from the question
        flags = {n: a.to_numpy(zero_copy_only=False).astype(bool) for n, a in s1_flags(batch["question"]).items()}
    source_type = pc.fill_null(batch["source_type"].combine_chunks(), "")
    aime = pc.match_substring(source_type, S1_ASY_KEEP).to_numpy(zero_copy_only=False).astype(bool)
    asy_kept = flags["flag_s1_asy"] & (aime | whitelisted)
    checks = missing + [(reason, flags[n] & ~asy_kept) for reason, n in (
        ("asy_diagram", "flag_s1_asy"), ("image", "flag_s1_image"), ("numbering", "flag_s1_numbering"),
        ("bold_digit", "flag_s1_bold_digit"))]
    reason = np.full(batch.num_rows, "", dtype=object)
    for name, mask in reversed(checks):  # earlier checks win
        reason[mask] = name
    return reason


def score_quality(ds, cfg):
    """Ray Data stage: add the quality columns (no thresholds involved)."""
    return ds.map_batches(quality_columns, batch_format="pyarrow", batch_size=cfg.batch_size)


def quality_verdict(batch: pa.Table, cfg: QualityConfig) -> list[tuple[str, np.ndarray]]:
    return [("quality", quality_reason(batch, cfg) if "q_words" in batch.column_names else _kept(batch))]


def _kept(batch: pa.Table) -> np.ndarray:
    return np.full(batch.num_rows, "", dtype=object)


# Its flags need no config: thresholds (min_words, require, ...) change only the verdict.
STAGE = Stage("quality", QualityConfig, score_quality, quality_verdict, SCORE_COLUMNS)
