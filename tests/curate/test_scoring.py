"""The scoring stages as Ray Data actor pools with offline models (tiny random Llama, SmolLM2
tokenizer, packaged MiniLM) and the scoring section's validation."""

import pandas as pd
import pytest

from s1ray.curate.scoring import ScoringConfig, stage_names
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


def test_config_sections_and_stage_order():
    cfg = ScoringConfig.model_validate({
        "traces": {"enabled": True, "teacher": {"model": "tiny:tiny"}},
        "difficulty": {"solvers": [{"name": "a", "generation": {"model": "tiny:tiny"}},
                                   {"name": "b", "generation": {"model": "tiny:tiny"}}]},
    })
    assert stage_names(cfg) == ["traces", "lengths", "domains", "solver:a", "solver:b"]
    with pytest.raises(Exception, match="unknown|extra"):
        ScoringConfig.model_validate({"difficulty": {"solver": []}})


def test_arrow_stage_types_skips_and_replaces_columns():
    """The wrapper every stage runs in: typed columns, skipped rows null, recomputed columns replaced."""
    import numpy as np
    import pyarrow as pa

    from s1ray.curate.scoring import ArrowStage, _relabel

    emb = np.eye(4, 8, dtype=np.float32)
    batch = pa.table({"question": ["a", "b", "c", "d"], "skip": [False, True, False, False],
                      "_domain_emb": pa.array([list(r) for r in emb], pa.list_(pa.float32())),
                      "domain_pred": ["00"] * 4, "domain_title": ["x"] * 4,
                      "domain_score": pa.array([0.0] * 4, pa.float32()), "domain_method": ["embedding"] * 4})
    code_emb = np.zeros((61, 8), dtype=np.float32)
    code_emb[5, 0] = code_emb[7, 2] = code_emb[9, 3] = 1.0  # codes 12 (row 0), 14 (row 2), 16 (row 3)
    stage = ArrowStage(_relabel, {"centroids": emb, "code_emb": code_emb, "weight": 0.0}, skip_column="skip",
                       construct=False, replace=("domain_pred", "domain_title", "domain_score", "domain_method"))
    out = stage(batch)
    assert out["domain_pred"].to_pylist() == ["12", None, "14", "16"]
    assert out["domain_method"].to_pylist()[0] == "embedding+clusters" and out.schema.field("domain_cluster").type == pa.int64()
    assert out["question"].to_pylist() == ["a", "b", "c", "d"]

    def all_null(df):
        out = df.copy()
        out["trace_error"] = None
        out["solver_x_correct"] = None
        return out

    typed = ArrowStage(all_null, construct=False)(batch)
    assert typed.schema.field("trace_error").type == pa.string()  # not Arrow's null type
    assert typed.schema.field("solver_x_correct").type == pa.bool_()


def write_sources(tmp_path):
    import json

    rows = []
    for i in range(8):
        row = {"question": f"How many ways can {i + 3} people sit around a round table?", "answer": str(i + 2)}
        if i % 2 == 0:
            row.update(thinking=[f"We count arrangements for case {i}. " * (i + 1)], attempt="\\boxed{1}",
                       attempt_correct=True)
        rows.append(row)
    rows.append(dict(rows[0]))  # exact duplicate: dropped by the rules, never sent to a model
    rows.append({"question": "Which of these numbers is a prime number?", "choices": ["4", "7"], "answer": "1",
                 "thinking": ["Four is even; seven has no divisors."], "attempt": "B"})
    path = tmp_path / "pool.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_curate_with_model_stages_on_actor_pools(ray_local, tmp_path):
    """Rules + models through `s1ray curate`, then `s1ray select` on the scored pool."""
    from s1ray.curate.config import CurateConfig
    from s1ray.curate.pipeline import run_curate
    from s1ray.curate.selection import SelectConfig, run_select
    from s1ray.models.loading import load_tokenizer

    gen = {"model": "tiny:tiny", "max_new_tokens": 4, "batch_size": 4, "num_cpus": 0.5}
    cfg = CurateConfig.model_validate({
        "sources": [{"name": "t", "path": str(write_sources(tmp_path))}],
        "output_dir": str(tmp_path / "out"), "batch_size": 4,
        "scoring": {
            "traces": {"enabled": True, "teacher": {**gen, "max_new_tokens": 6}, "max_attempts": 2},
            "difficulty": {"solvers": [{"name": "tiny_a", "generation": {**gen, "concurrency": 2}}]},
            "pool": {"batch_size": 4},
        },
    })
    summary = run_curate(cfg)
    assert summary["accounting"]["ok"] and summary["input"] == 10
    assert summary["stages"]["scoring"]["status"] == "computed"
    df = pd.read_parquet(summary["paths"]["scored_pool"]).sort_values("row_index").reset_index(drop=True)
    dup = df["drop_stage"] == "dedup"
    assert dup.sum() == 1 and df.loc[dup, "solver_tiny_a_reason"].isna().all()  # skipped: no model time
    assert df.loc[dup, "thinking_tokens"].isna().all()
    scored = ~dup
    # Traces: the tiny random teacher never finishes within 6 tokens: its rows fail twice and are
    # quarantined with the reason; rows with their own trace keep it.
    own = df["thinking"].notna() & scored
    assert (df.loc[own, "trace_source"] == "original").all()
    teacher = scored & ~own
    assert teacher.sum() == 4
    assert df.loc[teacher, "drop_stage"].eq("traces").all()
    assert df.loc[teacher, "drop_reason"].str.startswith(
        "quarantined: teacher trace failed: truncated at max_new_tokens (after 2").all()
    # Lengths: the SmolLM2 tokenizer's count of the resolved trace.
    tok = load_tokenizer("tiny:tiny")
    for _, r in df[own].iterrows():
        assert r["thinking_tokens"] == len(tok(r["thinking"][0], add_special_tokens=False)["input_ids"])
    # Domains: valid codes from the embedding classifier.
    assert df.loc[scored, "domain_pred"].str.fullmatch(r"\d\d").all()
    assert (df.loc[scored, "domain_method"] == "embedding").all() and df.loc[dup, "domain_pred"].isna().all()
    # Difficulty: the solver (a pool of 2 actors) answered and was graded; a random model solves
    # nothing, so the difficulty filter keeps every row it saw.
    assert (df.loc[scored, "solver_tiny_a_tokens"] > 0).all() and df.loc[scored, "solver_tiny_a_reason"].notna().all()
    assert (df.loc[scored, "solver_failures"] == 1).all()
    assert df["keep"].sum() == own.sum() == summary["kept"] == 5
    assert summary["dropped"]["traces"] == 4 and summary["dropped"]["difficulty"] == 0
    # Selection reads the scored pool and only takes kept rows.
    sel = run_select(SelectConfig(input=summary["paths"]["scored_pool"], output_dir=str(tmp_path / "sel"),
                                  size=3, formats=["parquet"], plot=False))
    assert sel["size"] == 3 and sel["pool_size"] == 5


# --- model stages on Ray Data LLM (backends vllm / openai) -------------------------------------

@pytest.mark.parametrize("path,section", [("jobs/configs/curate_s1_59k.yaml", None),
                                          ("jobs/configs/pipeline_s1_32b.yaml", "curate")])
def test_s1_configs_build_valid_gpu_vllm_processors(path, section):
    """Teacher and solvers of the s1 configs: GPU processors whose engine_kwargs vLLM accepts as
    given (nothing dropped), one GPU bundle per tensor-parallel worker, s1's context lengths."""
    from pathlib import Path

    from s1ray.config import load_yaml
    from s1ray.models.batch_llm import vllm_processor_config
    from s1ray.models.generation import vllm_engine_kwargs

    raw = load_yaml(Path(__file__).resolve().parents[2] / path)
    cfg = ScoringConfig.model_validate((raw[section] if section else raw)["scoring"])
    gens = [cfg.traces.teacher] + [s.generation for s in cfg.difficulty.solvers]
    assert [g.backend for g in gens] == ["vllm"] * 3
    for g in gens:
        assert set(g.engine_kwargs) <= set(vllm_engine_kwargs(g, gpu=True))  # no key dropped as unknown
        pc = vllm_processor_config(g)  # num_gpus > 0: the GPU processor
        ek = pc.engine_kwargs
        assert ek["tensor_parallel_size"] == g.num_gpus and len(pc.placement_group_config["bundles"]) == g.num_gpus
        assert all(b["GPU"] == 1 for b in pc.placement_group_config["bundles"])
        assert ek["max_model_len"] >= g.max_new_tokens and ek["enable_prefix_caching"]
        assert 0 < ek["gpu_memory_utilization"] <= 0.95 and "kv_cache_memory_bytes" not in ek
        assert pc.concurrency == g.concurrency and pc.batch_size == g.batch_size and pc.should_continue_on_error


def test_llm_path_routing_and_judge_pool_fits(monkeypatch):
    """vllm/openai stages go to Ray Data LLM, hf stays on actor pools; a judge pool is fitted too."""
    import s1ray.curate.scoring as scoring

    api = {"backend": "openai", "model": "x", "num_cpus": 1.0, "endpoint": {"base_url": "http://127.0.0.1:1/v1"}}
    cfg = ScoringConfig.model_validate({
        "lengths": {"enabled": False}, "domains": {"enabled": False},
        "difficulty": {"solvers": [{"name": "a", "generation": api},
                                   {"name": "b", "generation": {"model": "tiny:tiny", "num_cpus": 1.0}}],
                       "judge": api}})
    seen = []
    monkeypatch.setattr(scoring, "_llm_stage", lambda ds, name, cfg, kw, skip, ncpu, jcpu: seen.append(
        (name, ncpu, jcpu)) or ds)

    class FakeDs:
        def __init__(self):
            self.maps = []

        def map_batches(self, fn, **kw):
            self.maps.append((fn, kw))
            return self

    ds = scoring.score_dataset(FakeDs(), cfg)
    assert [s[0] for s in seen] == ["solver:a"]  # the hf solver keeps its ArrowStage actor pool
    assert ds.maps[0][0] is scoring.ArrowStage and ds.maps[0][1]["fn_constructor_kwargs"]["fn"].__name__ == "SolverAttempts"
    _, solver_cpus, judge_cpus = seen[0]
    assert solver_cpus + judge_cpus + ds.maps[0][1]["num_cpus"] <= 1.0 + 1e-6  # 2 CPUs minus a read task


def _trace_batch():
    import pyarrow as pa

    return pa.table({"question": ["q0", "q1", "q2", "q3"], "answer": ["1", "2", "3", "4"],
                     "thinking": pa.array([None, ["own trace here"], None, None], pa.list_(pa.string())),
                     "skip": [False, False, False, True]})


def test_trace_passes_select_rows_and_retry_at_retry_temperature():
    """Pass 1 asks for rows without a trace (not skipped); failures are marked for pass 2, which
    samples at retry_temperature; the last pass marks nothing; resolve fills the trace columns."""
    from s1ray.curate import scoring
    from s1ray.curate.traces import TracesConfig
    from s1ray.models.generation import Generation

    cfg = TracesConfig(enabled=True, teacher={"model": "tiny:tiny", "temperature": 0.0, "max_new_tokens": 9},
                       max_attempts=2, min_thinking_chars=5)
    batch = _trace_batch()
    reqs = scoring._trace_requests(batch, cfg, 0, "skip")
    assert [r is not None for r in reqs] == [True, False, True, False]
    assert reqs[0].temperature == 0.0 and reqs[0].max_tokens == 9 and "q0" in reqs[0].prompt
    good = Generation("Long enough reasoning.\n\nFinal Answer: \\boxed{1}", 12, "stop")
    batch = scoring._trace_round(batch, [good, None, Generation("", 0, "error", "boom"), None], cfg, 0)
    assert batch["_trace_retry"].to_pylist() == [False, False, True, False]
    assert batch["trace_error"].to_pylist() == [None, None, "generation error: boom (after 1 attempt(s))", None]
    retry = scoring._trace_requests(batch, cfg, 1, "skip")
    assert [r is not None for r in retry] == [False, False, True, False]
    assert retry[2].temperature == cfg.retry_temperature and retry[2].seed != reqs[2].seed
    batch = scoring._trace_round(batch, [None, None, Generation("x", 9, "length"), None], cfg, 1)
    assert batch["_trace_retry"].to_pylist() == [False] * 4  # no third attempt
    out = scoring._trace_resolve(batch, "skip")
    assert "_trace_retry" not in out.column_names
    assert out["trace_source"].to_pylist() == ["teacher", "original", None, None]
    assert out["trace_error"].to_pylist()[2] == "truncated at max_new_tokens (after 2 attempt(s))"
    assert out["trace_correct"].to_pylist()[0] is True and out["teacher_thinking"].to_pylist()[3] is None
