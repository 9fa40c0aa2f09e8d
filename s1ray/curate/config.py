"""``s1ray curate`` configuration: sources, evaluation sets and the rule stages' knobs.

Each rule stage has its own section. A stage's cached output is keyed only by the sections
its scores depend on (and the stages before it): quality flags need no config at all, so
changing a quality threshold (``min_words``, ``require``, ...) never recomputes them; only
dedup, which prefers quality-passing rows as the kept copy, is recomputed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from s1ray.config import RayConfig, StrictModel
from s1ray.curate.scoring import ScoringConfig
from s1ray.io.readers import SourceConfig

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


class DedupConfig(StrictModel):
    """Exact dedup on normalized text, then math-aware MinHash LSH near-dedup across sources.

    Shingles are ``shingle_size`` consecutive tokens (words, numbers and single symbols).
    A near-duplicate candidate from LSH is confirmed only when the estimated Jaccard
    similarity reaches ``threshold`` AND both questions hold the same numbers and formulas
    (``math_aware``); so two exercises differing only in their numbers both stay, while a
    copy reworded by a word or two is caught. The math key also holds number words, a list
    of math relation words (odd/even, larger/smaller, ...) and ALL-CAPS words, so sibling
    exercises that differ in one of those stay apart. Measured on 1,500 planted question
    groups (tests/benchmarks/bench_curate_rules.py): 3-token shingles at 0.6 remove all exact,
    whitespace and case copies, 99.9% of one-word and 98% of two-word rewordings, and merge
    no number-changed variant; 5-token shingles at 0.8 catch only ~60% / ~30% of rewordings,
    and without the math key ~1,500 of 3,000 distinct questions are merged.
    """

    enabled: bool = True
    near: bool = True
    shingle_size: int = 3
    num_perm: int = 64
    bands: int = 16  # rows per band = num_perm / bands
    threshold: float = 0.6
    math_aware: bool = True
    seed: int = 1
    # Key words of the math key: "concepts" (synonym groups, s1ray.curate.text.KEY_CONCEPTS) or the
    # first, smaller list ("basic"). Short questions (4..short_tokens tokens) are also paired when one
    # token was substituted, inserted or deleted (0 = off). answer_guard: two questions whose reference
    # answers both exist and differ are never merged. choices_aware: multiple-choice options are part
    # of the question (same stem, other options = another question). See s1ray/curate/dedup.py.
    key_words: Literal["concepts", "basic"] = "concepts"
    short_tokens: int = Field(24, ge=0)
    answer_guard: bool = True
    choices_aware: bool = True


class DecontamConfig(StrictModel):
    """N-gram decontamination against evaluation sets (s1 uses 8-grams).

    ``rule: s1`` is s1's exact rule (data/decontaminate_util.py, collect_data.py): lowercase,
    split on whitespace, and any ``n``-gram shared with an evaluation problem drops the row; no
    exemption, no exact match (the other knobs below are not used).

    ``rule: distinctive`` (default) closes two holes of plain n-gram overlap and ignores
    boilerplate: words are lowercase alphanumeric runs (punctuation and LaTeX markup do not hide
    a copy); evaluation problems shorter than ``n`` words are caught by an exact normalized
    match; n-grams that are common phrasing (found in more than ``max_eval_df`` evaluation
    problems or more than ``max_pool_df`` pool rows) do not flag a row on their own. A row that
    shares at least ``copy_fraction`` of one evaluation problem's n-grams is a copy of it and is
    flagged whatever the commonness of those n-grams, and copies never count towards
    ``max_pool_df``: so however many reworded copies of a problem a pool holds, each is caught,
    and the exemption never unflags them.
    """

    enabled: bool = True
    rule: Literal["distinctive", "s1"] = "distinctive"
    n: int = Field(8, ge=1)
    min_matches: int = Field(1, ge=1)  # distinctive n-grams a row must share with one benchmark
    max_eval_df: int = 2
    max_pool_df: int = 3
    copy_fraction: float = Field(0.5, gt=0, le=1)
    exact_match: bool = True


class CurateConfig(StrictModel):
    sources: list[SourceConfig]
    eval_sets: list[SourceConfig] = []  # `name` is the benchmark named in flags
    quality: QualityConfig = QualityConfig()
    dedup: DedupConfig = DedupConfig()
    decontam: DecontamConfig = DecontamConfig()
    scoring: ScoringConfig | None = None  # model stages (traces, lengths, domains, solvers); absent = rules only
    output_dir: str = "outputs/curate"
    cache: bool = True  # reuse completed stage outputs (keyed by config + input fingerprints)
    batch_size: int = 4096  # rows per Ray Data batch; the rule stages are vectorised per batch
    plot: bool = True
    ray: RayConfig = RayConfig()
