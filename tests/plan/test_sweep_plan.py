"""The sweep planner: trials multiply, the evaluation part follows problems and tokens, and the
exported-mode recommendation flips where HF in training becomes more than 2x slower than vLLM."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from s1ray.config import load_config
from s1ray.plan import PlanError, hardware, plan_train
from s1ray.plan.sweep import (EXPORTED_MARGIN, GenerationAssumptions, hf_in_training, kv_bytes_per_token, plan_sweep,
                              stage_reach, vllm_exported)
from s1ray.plan.shapes import model_shape
from s1ray.sweep.config import SweepConfig

MODEL = "Qwen/Qwen2.5-7B-Instruct"  # in the planner's table of shapes: no download


def sweep(**over) -> SweepConfig:
    data = {
        "pool": "/nonexistent/pool.parquet",
        "space": {"sizes": [100, 400], "criteria": ["s1", "random"], "seeds": [0]},
        "max_concurrent_trials": 1,
        "train": {"model": MODEL, "epochs": 2, "global_batch_size": 16, "block_size": 16384, "num_workers": 8,
                  "use_gpu": True, "gradient_checkpointing": True, "batching": "pad", "dtype": "bfloat16"},
        "evaluate": {"benchmarks": [{"name": "aime24"}, {"name": "math500", "limit": 98}], "budgets": [4096],
                     "generation": {"batch_size": 16},
                     "budget_forcing": {"max_answer_tokens": 8192}},
    }
    for key, value in over.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    return SweepConfig.model_validate(data)


def test_trials_multiply_and_each_trains_its_own_subset_size():
    small = plan_sweep(sweep(), mean_tokens=4000)
    assert len(small.trials) == 4  # 2 sizes x 2 criteria x 1 seed
    one = plan_train(sweep().train, hardware("h100-80gb", 8), n_examples=400, mean_tokens=4000)
    t400 = [t for t in small.trials if t.trial["size"] == 400]
    assert all(t.train.timing.wall_s == one.timing.wall_s and t.n_examples == 400 for t in t400)
    assert t400[0].train_s > [t for t in small.trials if t.trial["size"] == 100][0].train_s
    big = plan_sweep(sweep(space={"criteria": ["s1", "random", "longest"], "seeds": [0, 1, 2]}), mean_tokens=4000)
    assert len(big.trials) == 18
    for mode in ("in_training", "exported"):
        a, b = small.device_hours(mode), big.device_hours(mode)
        for part in ("training", "evaluation", "total"):
            assert b[part] == pytest.approx(4.5 * a[part])  # 18 / 4 trials, each the same
        assert big.wall_s(mode) == pytest.approx(4.5 * small.wall_s(mode))  # one trial at a time
    two = plan_sweep(sweep(max_concurrent_trials=2), mean_tokens=4000)
    assert two.wall_s() < small.wall_s() and two.device_hours() == small.device_hours()
    # The full pool is one trial per seed whatever the criterion; its rows come from --pool-rows here.
    with pytest.raises(PlanError, match="--pool-rows"):
        plan_sweep(sweep(space={"sizes": [100, "full"]}), mean_tokens=4000)
    full = plan_sweep(sweep(space={"sizes": [100, "full"]}), mean_tokens=4000, pool_rows=5000)
    assert [t.n_examples for t in full.trials] == [100, 100, 5000]


def test_asha_pays_later_stages_for_the_trials_it_keeps():
    assert stage_reach(sweep()) == [1.0]
    cfg = sweep(stages=2, intermediate_limit=10, asha={"enabled": True, "grace_period": 1, "reduction_factor": 3})
    assert stage_reach(cfg) == pytest.approx([1.0, 1 / 3])
    assert stage_reach(sweep(stages=4, asha={"enabled": True, "grace_period": 1, "reduction_factor": 2})) == \
        pytest.approx([1.0, 0.5, 0.25, 0.25])  # rungs at 1 and 2 (max_t = 3 has none: stop_last_trials off)
    p, no_asha = plan_sweep(cfg, mean_tokens=4000), plan_sweep(cfg.model_copy(update={"asha": cfg.asha.model_copy(
        update={"enabled": False})}), mean_tokens=4000)
    t, t0 = p.trials[0], no_asha.trials[0]
    inter, final = p.evals["intermediate"].seconds, p.evals["final_in_training"].seconds
    assert p.evals["intermediate"].tasks == 20  # 10 per benchmark before the last stage
    start = t.train_s - t.train.timing.wall_s
    assert t.expected_s["in_training"] == pytest.approx(start + t.train.timing.wall_s * (1 + 1 / 3) / 2 + inter + final / 3)
    assert t0.expected_s["in_training"] == pytest.approx(t.train_s + inter + final)


def test_evaluation_scales_with_problems_and_tokens():
    a = GenerationAssumptions(answer_tokens=500, runaway_rate=0.0)
    base = plan_sweep(sweep(), mean_tokens=4000, assumptions=a)
    final = base.evals["final_exported"]
    assert final.tasks == 128  # aime24 (30) + math500 limited to 98, one method, one budget
    assert final.tokens == pytest.approx(128 * (4096 + 500))
    # Twice the problems: twice the tokens, and HF twice the batches (16 rows per rank -> 32, batch 16).
    doubled = plan_sweep(sweep(evaluate={"benchmarks": [{"name": "aime24"}, {"name": "math500", "limit": 226}]}),
                         mean_tokens=4000, assumptions=a)
    for key in ("final_in_training", "final_exported"):
        assert doubled.evals[key].tokens == pytest.approx(2 * base.evals[key].tokens)
    assert doubled.evals["final_in_training"].generate_s == pytest.approx(2 * base.evals["final_in_training"].generate_s)
    assert doubled.evals["final_exported"].generate_s > 1.5 * base.evals["final_exported"].generate_s
    longer = plan_sweep(sweep(evaluate={"budgets": [8192]}), mean_tokens=4000, assumptions=a)
    assert longer.evals["final_exported"].tokens == pytest.approx(128 * (8192 + 500))
    assert longer.evals["final_in_training"].seconds > 1.8 * base.evals["final_in_training"].seconds
    # Two budgets: two rows per question; the training part does not change with any of it.
    two = plan_sweep(sweep(evaluate={"budgets": [1024, 4096]}), mean_tokens=4000, assumptions=a)
    assert two.evals["final_exported"].tasks == 256
    assert two.device_hours()["training"] == base.device_hours()["training"]


def test_hf_batches_are_cut_to_the_kv_cache_that_fits_beside_the_training_state():
    shape = model_shape(MODEL)
    assert kv_bytes_per_token(shape) == 2 * 28 * 4 * 128 * 2  # 56 KiB per token in bf16
    cfg = sweep(evaluate={"benchmarks": [{"name": "aime24"}, {"name": "math500"}],  # 530 rows: 67 per rank
                          "generation": {"batch_size": 64}, "budget_forcing": {"max_answer_tokens": 32768}})
    train = plan_train(cfg.train, hardware("h100-80gb", 8), n_examples=100, mean_tokens=4000)
    hf = hf_in_training(shape, train, cfg.evaluate, 64, GenerationAssumptions())
    assert 1 <= hf.batch < 64 and "batch cut" in hf.note
    tiny_gpu = replace(train, hardware=replace(train.hardware, memory_bytes=train.memory.phases["step"] // 2))
    assert not hf_in_training(shape, tiny_gpu, cfg.evaluate, 64, GenerationAssumptions()).fits
    # vLLM engines: more engines, more throughput on the same rows.
    one = vllm_exported(shape, train.hardware, cfg.evaluate, GenerationAssumptions(runaway_rate=0.0))
    gen8 = cfg.evaluate.generation.model_copy(update={"backend": "vllm", "num_gpus": 1, "concurrency": 8})
    eight = vllm_exported(shape, train.hardware, cfg.evaluate.model_copy(update={"generation": gen8}),
                          GenerationAssumptions(runaway_rate=0.0))
    assert eight.generate_s < one.generate_s / 3


def test_exported_recommendation_flips_where_hf_is_more_than_twice_as_slow():
    cfg = sweep()
    unit = plan_sweep(cfg, mean_tokens=4000, assumptions=GenerationAssumptions(hf_slowdown=1.0))
    # HF's time is proportional to its per-step slowdown; vLLM's does not depend on it.
    for ratio, mode in ((0.95 * EXPORTED_MARGIN, "in_training"), (1.05 * EXPORTED_MARGIN, "exported")):
        slowdown = ratio / unit.hf_vs_vllm
        p = plan_sweep(cfg, mean_tokens=4000, assumptions=GenerationAssumptions(hf_slowdown=slowdown))
        assert p.hf_vs_vllm == pytest.approx(ratio) and p.recommended_mode == mode
        saved = p.device_hours("in_training")["evaluation"] - p.device_hours("exported")["evaluation"]
        assert (saved > 0) == (p.hf_vs_vllm > 1)


def test_errors_name_what_is_missing(tmp_path):
    with pytest.raises(PlanError, match="bench.*limit"):
        plan_sweep(sweep(evaluate={"benchmarks": [{"name": "jsonl", "path": "/nonexistent/bench.jsonl"}]}),
                   mean_tokens=4000)
    bench = tmp_path / "b.jsonl"
    bench.write_text("".join(json.dumps({"question": str(i), "answer": str(i)}) + "\n" for i in range(7)))
    p = plan_sweep(sweep(evaluate={"benchmarks": [{"name": "jsonl", "path": str(bench)}]}), mean_tokens=4000)
    assert p.evals["final_exported"].tasks == 7


def test_the_paper_sweep_config_uses_what_its_plan_recommends():
    from s1ray.configs import find_config

    cfg = load_config(SweepConfig, find_config("sweep_s1_cluster"))
    p = plan_sweep(cfg, pool_rows=59029, mean_tokens=10000)
    assert len(p.trials) == 78  # 5 sizes x 5 criteria x 3 seeds + the full pool x 3 seeds
    assert p.recommended_mode == "exported" == cfg.evaluate.mode
    assert p.hf_vs_vllm > EXPORTED_MARGIN and math.isfinite(p.hf_vs_vllm)
    assert p.device_hours("exported")["total"] < p.device_hours("in_training")["total"]


def test_s1ray_plan_on_a_sweep_config_prints_the_sweep_table_and_json(capsys):
    from s1ray import cli
    from s1ray.configs import find_config
    from s1ray.plan.sweep import is_sweep_config

    assert is_sweep_config(str(find_config("sweep_s1_cluster")))
    assert not is_sweep_config(str(find_config("train_s1_qwen32b"))) and not is_sweep_config("/nonexistent.yaml")
    argv = ["plan", "--config", "sweep_s1_cluster", "--pool-rows", "59029", "--mean-tokens", "8000"]
    assert cli.main([*argv, "--runaway-rate", "0", "space.seeds=[0]"]) == 0
    out = capsys.readouterr().out
    # with no runaway answers, s1's float32 vLLM engines are only ~1.6x HF in training: below the 2x bar
    assert "26 trials" in out and "recommended evaluate.mode: in_training" in out and "0% run to max_answer_tokens" in out
    assert cli.main(argv) == 0  # 1% of answers run to 32,768 tokens (the default): exported wins
    assert "recommended evaluate.mode: exported" in capsys.readouterr().out
    assert cli.main([*argv, "--json", "--gpu", "h200"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["hardware"] == "h200" and data["trials"] == 78 and data["section"] == "sweep"
    assert set(data["device_hours"]["exported"]) == {"training", "evaluation", "total"}
    assert cli.main(["plan", "--config", "sweep_s1_cluster"]) == 2  # the full pool's rows are unknown here
    assert "--pool-rows" in capsys.readouterr().err
