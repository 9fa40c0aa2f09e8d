"""Selection criteria, above all s1's Algorithm 1: size, determinism, forced set, domains, length bias."""

import json

import numpy as np
import pandas as pd
import pytest

from s1ray.curate.selection import (SelectConfig, SelectionError, SelectionParams, forced_mask, run_select,
                                    select_subset)


def make_pool(n=600, n_domains=6, seed=0):
    rng = np.random.default_rng(seed)
    sources = rng.choice(["qfq/openaimath/Algebra", "gsm8k", "olympiad", "college_math"], size=n)
    pool = pd.DataFrame({
        "id": [f"q{i:05d}" for i in range(n)],
        "question": [f"question {i}" for i in range(n)],
        "solution": ["s"] * n,
        "answer": ["1"] * n,
        "source_type": sources,
        "cot_type": ["math"] * n,
        "thinking": [[f"trace {i}"] for i in range(n)],
        "attempt": ["a"] * n,
        "attempt_correct": rng.random(n) < 0.7,
        "domain": [f"{10 + i % n_domains:02d}" for i in range(n)],
        "thinking_tokens": rng.integers(100, 5000, size=n),
        "solver_failures": rng.integers(0, 3, size=n),
        "metadata": ["{}"] * n,
    })
    # A few forced rows: correct AIME / GPQA, and correct MATH with a long trace.
    pool.loc[0:2, ["source_type", "attempt_correct"]] = ["qq8933/AIME_1983_2024", True]
    pool.loc[3, ["source_type", "attempt_correct"]] = ["Idavidrein/gpqa", True]
    pool.loc[4, ["source_type", "attempt_correct"]] = ["Idavidrein/gpqa", False]  # incorrect: not forced
    pool.loc[5, ["source_type", "attempt_correct", "thinking_tokens"]] = ["qfq/openaimath/Geometry", True, 7000]
    pool.loc[6, ["source_type", "attempt_correct", "thinking_tokens"]] = ["qfq/openaimath/Geometry", True, 5000]
    return pool


def test_forced_mask_follows_paper_rules():
    pool = make_pool()
    mask = forced_mask(pool)
    assert list(np.flatnonzero(mask[:7])) == [0, 1, 2, 3, 5]
    assert mask[7:].sum() == ((pool["thinking_tokens"][7:] > 5600) & pool["attempt_correct"][7:]
                              & pool["source_type"][7:].str.contains("openaimath")).sum()
    lower = SelectionParams(math_min_tokens=4000)
    assert forced_mask(pool, lower)[6]


@pytest.mark.parametrize("criterion", ["s1", "random", "longest", "diverse", "difficulty"])
def test_exact_size_unique_and_deterministic(criterion):
    pool = make_pool()
    a = select_subset(pool, criterion, 100, seed=3)
    b = select_subset(pool, criterion, 100, seed=3)
    assert len(a) == 100 and a["id"].is_unique
    assert a["id"].tolist() == b["id"].tolist()
    assert list(a["selection_rank"]) == list(range(100))
    if criterion in ("s1", "random", "diverse"):
        assert select_subset(pool, criterion, 100, seed=4)["id"].tolist() != a["id"].tolist()
    assert len(select_subset(pool, criterion, 10_000, seed=0)) == len(pool)  # capped at pool size


def test_s1_forced_inclusions_come_first():
    pool = make_pool()
    sub = select_subset(pool, "s1", 50, seed=0)
    n_forced = int(forced_mask(pool).sum())
    assert sub["selection_forced"].tolist() == [True] * n_forced + [False] * (50 - n_forced)
    assert set(sub["id"][:n_forced]) == set(pool["id"][forced_mask(pool)])
    # Fewer slots than forced rows: the longest forced rows, nothing sampled.
    small = select_subset(pool, "s1", 2, seed=0)
    assert small["selection_forced"].all() and len(small) == 2


def test_s1_reaches_every_domain_and_balances_them():
    pool = make_pool(n=900, n_domains=9)
    pool.loc[pool.index[-3:], "domain"] = "97"  # a tiny domain must still be reached
    sub = select_subset(pool, "s1", 90, seed=1, params=SelectionParams(forced=False))
    counts = sub["domain"].value_counts()
    assert set(counts.index) == set(pool["domain"])
    # Uniform over domains: no big domain dominates (expected ~10 each of 9 big ones).
    assert counts.drop("97").max() <= 25


def test_s1_prefers_longer_traces_within_a_domain():
    pool = make_pool(n=2000, n_domains=1)
    pool["thinking_tokens"] = np.arange(2000)[::-1] * 3  # distinct lengths
    sub = select_subset(pool, "s1", 200, seed=0, params=SelectionParams(forced=False))
    ranks = pool["thinking_tokens"].rank(ascending=False).to_numpy()
    chosen = ranks[pool["id"].isin(sub["id"]).to_numpy()]
    # 2^-rank weights pick almost always from the top of the remaining list: the first 200 draws
    # land near the top 200 + a few. Uniform sampling would put the median rank near 1000.
    assert np.median(chosen) < 250
    assert sub["thinking_tokens"].mean() > 2 * pool["thinking_tokens"].mean() * 0.8


def test_diverse_is_uniform_over_domains_not_rows():
    pool = make_pool(n=1000, n_domains=2)
    pool.loc[:899, "domain"] = "big"
    pool.loc[900:, "domain"] = "small"
    sub = select_subset(pool, "diverse", 100, seed=0)
    assert 35 <= (sub["domain"] == "small").sum() <= 65  # random rows would give ~10


def test_longest_difficulty_and_full():
    pool = make_pool()
    longest = select_subset(pool, "longest", 20, seed=0)
    assert longest["thinking_tokens"].tolist() == sorted(pool["thinking_tokens"], reverse=True)[:20]
    hard = select_subset(pool, "difficulty", 30, seed=0)
    fails = hard["solver_failures"].tolist()
    assert fails == sorted(fails, reverse=True) and fails[0] == pool["solver_failures"].max()
    top = hard[hard["solver_failures"] == fails[0]]["thinking_tokens"].tolist()
    assert top == sorted(top, reverse=True)
    assert len(select_subset(pool, "full", 5, seed=0)) == len(pool)


def test_missing_domain_falls_back_to_prediction():
    pool = make_pool(n=40)
    pool["domain"] = None
    pool["domain_pred"] = "05"
    sub = select_subset(pool, "diverse", 10, seed=0)
    assert set(sub["domain"].isna()) == {True}  # original column untouched
    assert len(sub) == 10


def test_bad_requests_name_the_problem():
    pool = make_pool(n=20)
    with pytest.raises(SelectionError, match="criterion"):
        select_subset(pool, "best", 5, seed=0)
    with pytest.raises(SelectionError, match="thinking_tokens"):
        select_subset(pool.drop(columns=["thinking_tokens"]), "s1", 5, seed=0)
    with pytest.raises(SelectionError, match="solver_failures"):
        select_subset(pool.drop(columns=["solver_failures"]), "difficulty", 5, seed=0)


def test_to_s1k_takes_the_teacher_trace_when_the_source_has_none():
    from s1ray.curate.selection import to_s1k

    pool = make_pool().iloc[:3].reset_index(drop=True)
    pool["thinking"] = [["own"], None, None]
    pool["attempt"] = ["own attempt", None, None]
    pool["trace_thinking"] = ["own", "teacher trace", None]
    pool["trace_attempt"] = ["own attempt", "teacher attempt", None]
    df = to_s1k(pool)
    assert [list(t) for t in df["thinking_trajectories"]] == [["own"], ["teacher trace"], []]
    assert df["attempt"].tolist()[:2] == ["own attempt", "teacher attempt"] and pd.isna(df["attempt"][2])


def test_run_select_uses_only_kept_rows(tmp_path):
    pool = make_pool(n=50)
    pool["keep"] = [i % 2 == 0 for i in range(50)]
    pool.to_parquet(tmp_path / "pool.parquet")
    s = run_select(SelectConfig(input=str(tmp_path / "pool.parquet"), output_dir=str(tmp_path / "o"), size=100,
                                formats=["parquet"], plot=False))
    assert s["pool_size"] == 25 and s["size"] == 25


def test_run_select_writes_s1k_subset_and_report(tmp_path):
    pool = make_pool()
    pool.to_parquet(tmp_path / "pool.parquet")
    out = tmp_path / "sel"
    summary = run_select(SelectConfig(input=str(tmp_path / "pool.parquet"), output_dir=str(out), size=40))
    assert summary["size"] == 40
    df = pd.read_parquet(out / "subset.parquet")
    for col in ["solution", "question", "cot_type", "source_type", "metadata", "cot",
                "thinking_trajectories", "attempt"]:
        assert col in df.columns
    assert list(df["thinking_trajectories"][0]) == [f"trace {int(df['id'][0][1:])}"]
    assert sum(1 for _ in open(out / "subset.jsonl")) == 40
    import datasets

    assert len(datasets.load_from_disk(str(out / "subset_hf"))) == 40
    rep = json.loads((out / "report.json").read_text())
    assert rep["size"] == 40 and sum(rep["domains"].values()) == 40 and rep["params"]["math_min_tokens"] == 5600
    assert (out / "thinking_lengths.png").stat().st_size > 1000
    assert "| domain | n |" in (out / "report.md").read_text()
