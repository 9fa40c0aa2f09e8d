"""Smallest-effective-set logic on synthetic trial tables: ties, noise, epsilon edges, failures."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from s1ray.sweep.analysis import (
    COMPLETED,
    FAILED,
    STOPPED,
    markdown_report,
    smallest_effective_set,
    summarize_groups,
    write_report,
)

POOL = 5000


def table(rows):
    """rows: (criterion, size, seed, score[, status[, error]])."""
    out = []
    for i, r in enumerate(rows):
        criterion, size, seed, score = r[:4]
        status = r[4] if len(r) > 4 else COMPLETED
        out.append({"trial_id": f"t{i}", "criterion": criterion, "size": size, "seed": seed,
                    "n_rows": POOL if size == "full" else size, "status": status,
                    "score": score, "stage": 1, "error": r[5] if len(r) > 5 else None})
    return pd.DataFrame(out)


def test_picks_smallest_size_within_absolute_epsilon_of_best():
    t = table([("s1", 100, 0, 0.30), ("s1", 1000, 0, 0.49), ("random", 1000, 0, 0.37),
               ("random", 100, 0, 0.20), ("full", "full", 0, 0.50)])
    r = smallest_effective_set(t, epsilon=0.02, reference="best")
    assert (r["smallest"]["criterion"], r["smallest"]["size"]) == ("s1", 1000)
    assert r["reference"]["used"] == "best" and r["reference"]["score"] == 0.50


def test_mean_over_seeds_smooths_noise():
    # One lucky seed of random@100 beats the threshold, but its mean over seeds does not.
    t = table([("random", 100, 0, 0.52), ("random", 100, 1, 0.20), ("random", 100, 2, 0.22),
               ("s1", 500, 0, 0.49), ("s1", 500, 1, 0.50), ("s1", 500, 2, 0.48),
               ("full", "full", 0, 0.50), ("full", "full", 1, 0.50)])
    r = smallest_effective_set(t, epsilon=0.03, reference="full")
    assert (r["smallest"]["criterion"], r["smallest"]["size"]) == ("s1", 500)
    assert r["smallest"]["n_seeds"] == 3
    assert r["smallest"]["std"] == pytest.approx(np.std([0.49, 0.50, 0.48], ddof=1))


def test_exactly_at_the_boundary_counts_as_within():
    # 0.8 - 0.1 is 0.7000000000000001 in floats: 0.7 must still count as within.
    t = table([("s1", 100, 0, 0.7), ("full", "full", 0, 0.8)])
    r = smallest_effective_set(t, epsilon=0.1, epsilon_mode="absolute", reference="full")
    assert r["smallest"]["size"] == 100
    # Just outside the boundary does not.
    t = table([("s1", 100, 0, 0.6999), ("full", "full", 0, 0.8)])
    assert smallest_effective_set(t, epsilon=0.1, reference="full")["smallest"]["size"] == "full"


def test_relative_epsilon_edges():
    t = table([("s1", 200, 0, 0.45), ("s1", 100, 0, 0.4499), ("full", "full", 0, 0.5)])
    r = smallest_effective_set(t, epsilon=0.1, epsilon_mode="relative", reference="full")
    assert r["threshold"] == pytest.approx(0.45)
    assert r["smallest"]["size"] == 200  # 0.45 exactly at 10% below 0.5; 0.4499 is not
    # epsilon 0: only the reference itself (or an equal score) qualifies.
    r0 = smallest_effective_set(t, epsilon=0.0, epsilon_mode="relative", reference="full")
    assert r0["smallest"]["size"] == "full"


def test_ties_at_smallest_size_prefer_higher_mean_then_name_and_list_others():
    t = table([("random", 100, 0, 0.48), ("s1", 100, 0, 0.49), ("diverse", 100, 0, 0.49),
               ("full", "full", 0, 0.50)])
    r = smallest_effective_set(t, epsilon=0.05, reference="full")
    assert r["smallest"]["criterion"] == "diverse"  # 0.49 tie with s1, broken by name
    assert sorted(r["also_within_at_that_size"]) == ["random", "s1"]


def test_missing_full_pool_trial_falls_back_to_best_and_says_so():
    t = table([("s1", 100, 0, 0.30), ("s1", 1000, 0, 0.45), ("full", "full", 0, math.nan, FAILED, "OOM")])
    r = smallest_effective_set(t, epsilon=0.01, reference="full")
    assert r["reference"]["requested"] == "full" and r["reference"]["used"] == "best"
    assert "no completed full-pool trial" in r["note"]
    assert r["smallest"]["size"] == 1000
    md = markdown_report(r)
    assert "fell back" in md and "OOM" in md


def test_failed_and_stopped_trials_are_shown_never_candidates():
    t = table([("s1", 100, 0, math.nan, FAILED, "RuntimeError: worker died"),
               ("s1", 100, 1, 0.99, STOPPED),  # stopped early: its intermediate score must not win
               ("s1", 500, 0, 0.49), ("full", "full", 0, 0.50)])
    r = smallest_effective_set(t, epsilon=0.02, reference="full")
    assert r["smallest"]["size"] == 500
    assert r["n_failed"] == 1 and r["n_stopped_early"] == 1
    g = {(x["criterion"], x["size"]): x for x in r["groups"]}
    assert g[("s1", 100)]["n_failed"] == 1 and g[("s1", 100)]["n_stopped"] == 1
    assert g[("s1", 100)]["mean"] is None and g[("s1", 100)]["within"] is False
    md = markdown_report(r)
    assert "worker died" in md and "stopped_early" in md
    assert len(r["trials"]) == 4  # every trial is in the JSON table


def test_partially_failed_group_averages_completed_seeds_and_counts_failures():
    t = table([("s1", 100, 0, 0.40), ("s1", 100, 1, math.nan, FAILED, "boom"), ("full", "full", 0, 0.41)])
    g = summarize_groups(t)
    row = g[g["criterion"] == "s1"].iloc[0]
    assert row["mean"] == 0.40 and row["n_completed"] == 1 and row["n_failed"] == 1


def test_min_mode_for_losses():
    t = table([("s1", 100, 0, 1.30), ("s1", 300, 0, 1.04), ("full", "full", 0, 1.00)])
    r = smallest_effective_set(t, epsilon=0.05, reference="full", metric_mode="min")
    assert r["smallest"]["size"] == 300 and r["threshold"] == pytest.approx(1.05)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no completed trial"):
        smallest_effective_set(table([("s1", 100, 0, math.nan, FAILED)]))
    with pytest.raises(ValueError, match="lacks column"):
        smallest_effective_set(pd.DataFrame({"criterion": ["s1"]}))
    with pytest.raises(ValueError, match="epsilon_mode"):
        smallest_effective_set(table([("s1", 100, 0, 0.5)]), epsilon_mode="percent")


def test_write_report_files(tmp_path):
    t = table([("s1", 100, 0, 0.4), ("s1", 100, 1, 0.44), ("random", 100, 0, 0.3),
               ("random", 100, 1, math.nan, FAILED, "x"), ("full", "full", 0, 0.45)])
    paths = write_report(smallest_effective_set(t, epsilon=0.05, reference="full"), tmp_path)
    data = json.loads(open(paths["json"]).read())
    assert data["smallest"]["criterion"] == "s1"
    assert open(paths["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "| random | 100 |" in open(paths["markdown"]).read()
