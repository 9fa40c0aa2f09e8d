"""The scoring stages as Ray Data actor pools with offline models (tiny random Llama, SmolLM2
tokenizer, packaged MiniLM), CPU fitting of the pools, and the scoring section's validation."""

import pandas as pd
import pytest

from s1ray.curate.scoring import ScoringConfig, fitted_cpus, score_dataset, scoring_outcome, stage_names
from s1ray.records import make_record, to_table


def small_pool():
    rows = []
    for i in range(8):
        rows.append(make_record(
            source="t", origin=f"t:{i}", question=f"How many ways can {i + 3} people sit around a round table?",
            answer=str(i + 2), thinking=[f"We count arrangements for case {i}. " * (i + 1)] if i % 2 == 0 else None,
            attempt="\\boxed{1}" if i % 2 == 0 else None, attempt_correct=True if i % 2 == 0 else None))
    rows.append(make_record(source="t", origin="t:mc", question="Which is a prime?", choices=["4", "7"], answer="B"))
    return to_table(rows)


def test_fitted_cpus_leave_room_for_read_tasks():
    assert fitted_cpus([(0.5, 1), (0.5, 1)], total=4) == [0.5, 0.5]
    fitted = fitted_cpus([(1.0, 2), (0.5, 1), (1.0, 1)], total=2)
    assert sum(c * n for c, n in zip(fitted, [2, 1, 1])) <= 1.5 + 1e-6
    assert fitted[0] == 2 * fitted[1]  # proportions kept


def test_config_sections_and_stage_order():
    cfg = ScoringConfig.model_validate({
        "traces": {"enabled": True, "teacher": {"model": "tiny:tiny"}},
        "difficulty": {"solvers": [{"name": "a", "generation": {"model": "tiny:tiny"}},
                                   {"name": "b", "generation": {"model": "tiny:tiny"}}]},
    })
    assert stage_names(cfg) == ["traces", "lengths", "domains", "solver:a", "solver:b"]
    with pytest.raises(Exception, match="unknown|extra"):
        ScoringConfig.model_validate({"difficulty": {"solver": []}})


def test_actor_pool_scoring_end_to_end(ray_local):
    import ray

    from s1ray.models.loading import load_tokenizer

    gen = {"model": "tiny:tiny", "max_new_tokens": 4, "batch_size": 4, "num_cpus": 0.5}
    cfg = ScoringConfig.model_validate({
        "traces": {"enabled": True, "teacher": {**gen, "max_new_tokens": 6}, "max_attempts": 2},
        "domains": {"refine_clusters": 2},
        "difficulty": {"solvers": [{"name": "tiny_a", "generation": {**gen, "concurrency": 2}}]},
        "pool": {"batch_size": 4},
    })
    ds = ray.data.from_arrow(small_pool()).repartition(3)
    df = score_dataset(ds, cfg).to_pandas().sort_values("origin").reset_index(drop=True)
    assert len(df) == 9
    # Traces: rows with their own trace keep it; the tiny random teacher never finishes within
    # 6 tokens, so its rows fail twice and carry the reason.
    own = df["thinking"].notna()
    assert (df.loc[own, "trace_source"] == "original").all()
    assert df.loc[~own, "trace_error"].str.contains("truncated at max_new_tokens \\(after 2").all()
    # Lengths: the SmolLM2 tokenizer's count of the resolved trace; 0 without a trace.
    tok = load_tokenizer("tiny:tiny")
    for _, r in df[own].iterrows():
        assert r["thinking_tokens"] == len(tok(r["thinking"][0], add_special_tokens=False)["input_ids"])
    assert (df.loc[~own, "thinking_tokens"] == 0).all()
    # Domains: every row labelled with a valid code by the refined embedding classifier.
    assert df["domain_pred"].str.fullmatch(r"\d\d").all() and (df["domain_method"] == "embedding+clusters").all()
    assert "_domain_emb" not in df.columns
    # Difficulty: the solver (a pool of 2 actors) answered every row and was graded; a random
    # model solves nothing.
    assert (df["solver_tiny_a_tokens"] > 0).all() and df["solver_tiny_a_reason"].notna().all()
    assert (df["solver_failures"] == 1).all() and (df["solver_solved"] == 0).all()
    out = scoring_outcome(df, cfg)
    assert out["scoring_quarantine"].notna().sum() == (~own).sum()
    assert out["scoring_drop"].isna().all()  # nothing solved: nothing too easy
