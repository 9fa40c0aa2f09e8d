"""The sweep checks its pool before any trial: one clear error instead of every trial failing."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from s1ray.config import ConfigError
from s1ray.sweep.config import SweepConfig
from s1ray.sweep.driver import check_pool


def sweep(pool: str, criteria: list[str], sizes: list = (2, "full")) -> SweepConfig:
    return SweepConfig.model_validate({
        "pool": pool, "space": {"sizes": list(sizes), "criteria": criteria, "seeds": [0]},
        "train": {"model": "tiny:tiny"},
        "evaluate": {"benchmarks": [{"name": "jsonl", "path": "b.jsonl"}], "budgets": [4]},
    })


def pool(n: int = 4, traces: bool = True, lengths: bool = True, keep: list[bool] | None = None) -> pd.DataFrame:
    rows = [{"id": f"q{i}", "question": f"What is {i} + 1?", "solution": f"\\boxed{{{i + 1}}}",
             "thinking": [f"{i} plus one is {i + 1}."] if traces else None, "attempt": str(i + 1)}
            for i in range(n)]
    df = pd.DataFrame(rows)
    if lengths:
        df["thinking_tokens"] = [10 + i for i in range(n)]
    if keep is not None:
        df["keep"] = keep
    return df


def test_rule_only_pool_fails_once_naming_traces_and_lengths():
    """The issue's case: sweep_local on the rule-only pool (no traces, no thinking_tokens)."""
    with pytest.raises(ConfigError) as e:
        check_pool(pool(traces=False, lengths=False), sweep("p.parquet", ["s1", "random"]))
    msg = str(e.value)
    assert "no trial was started" in msg and "curate_shared_pool_scored.yaml" in msg
    assert "none of its 4 kept rows can be trained on (0 have a reasoning trace, 4 an answer)" in msg
    # `random` needs no column, so the criteria alone would not stop this sweep: the traces do.
    assert "criterion 's1'" not in msg


def test_no_servable_criterion_fails_naming_the_columns(caplog):
    with pytest.raises(ConfigError, match=r"criterion 's1' needs column\(s\) \['thinking_tokens'\]"):
        check_pool(pool(lengths=False), sweep("p.parquet", ["s1", "longest"], sizes=[2, 3]))
    with pytest.raises(ConfigError, match=r"'difficulty' needs column\(s\) \['thinking_tokens', 'solver_failures'\]"):
        check_pool(pool(lengths=False), sweep("p.parquet", ["difficulty"], sizes=[2]))
    # A full-pool trial needs no criterion column: it still runs, the others are named.
    caplog.set_level(logging.WARNING, logger="s1ray.sweep.driver")
    assert len(check_pool(pool(lengths=False), sweep("p.parquet", ["s1"], sizes=[2, "full"]))) == 4
    assert "the 's1' trials will fail" in caplog.text


def test_partly_servable_sweep_warns_and_keeps_only_kept_rows(caplog):
    caplog.set_level(logging.WARNING, logger="s1ray.sweep.driver")
    df = pool(n=5, keep=[True, True, False, True, True])
    df.loc[4, "thinking"] = None  # one kept row without a trace
    out = check_pool(df, sweep("p.parquet", ["s1", "difficulty"]))
    assert list(out["id"]) == ["q0", "q1", "q3", "q4"]  # the funnel's dropped row is not selectable
    text = caplog.text
    assert "'difficulty' trials will fail" in text and "solver_failures" in text
    assert "1 of 4 kept rows have no reasoning trace" in text


def test_nothing_kept_is_an_error():
    with pytest.raises(ConfigError, match=r"no usable rows \(3 read, none kept"):
        check_pool(pool(n=3, keep=[False] * 3), sweep("p.parquet", ["random"]))


def test_relative_paths_are_resolved_on_the_driver(tmp_path, monkeypatch):
    """Trials run in Tune's trial folder: the sweep ships absolute paths to them."""
    from pathlib import Path

    from s1ray.sweep.driver import absolute_paths

    monkeypatch.chdir(tmp_path)
    Path("bench.jsonl").write_text("{}\n")
    Path("p.parquet").write_text("")
    cfg = absolute_paths(sweep("p.parquet", ["random"]).model_copy(update={"storage_path": "outputs/sweeps"}))
    assert cfg.storage_path == str(tmp_path / "outputs" / "sweeps") and cfg.pool == str(tmp_path / "p.parquet")
    # b.jsonl does not exist here: left as written (it may be a path only the nodes have)
    assert cfg.evaluate.benchmarks[0].path == "b.jsonl" and cfg.train.model == "tiny:tiny"
    cfg = absolute_paths(cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={
        "benchmarks": [cfg.evaluate.benchmarks[0].model_copy(update={"path": "bench.jsonl"})]})}))
    assert cfg.evaluate.benchmarks[0].path == str(tmp_path / "bench.jsonl")
