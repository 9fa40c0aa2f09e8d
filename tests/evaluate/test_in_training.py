"""In-training evaluation, in one process (world of one): the live model scores like a freshly
loaded copy of the same weights, and training state (mode, cache flag, RNG) is left as it was."""

from __future__ import annotations

import json

import pytest
import torch

from s1ray.evaluate.config import EvaluateConfig
from s1ray.evaluate.in_training import InTrainingEval
from s1ray.evaluate.runner import EvaluateBatch, build_tasks


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, save_tiny_model):
    root = tmp_path_factory.mktemp("in_training")
    model, tok = save_tiny_model(root / "model", seed=3)
    bench = root / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                             for i in range(5)))
    return {"root": root, "model": model, "tok": tok, "bench": bench}


def eval_config(tiny, **gen) -> EvaluateConfig:
    return EvaluateConfig.model_validate({
        "generation": {"model": str(tiny["root"] / "model"), "max_new_tokens": 6, "batch_size": 2, **gen},
        "benchmarks": [{"name": "jsonl", "path": str(tiny["bench"])}], "budgets": [3, 5],
        "budget_forcing": {"max_answer_tokens": 4}, "bootstrap_samples": 10, "progress": False})


def test_steps_are_evenly_spaced_and_end_at_the_last_step(tiny):
    ev = InTrainingEval(eval_config(tiny), evaluations=3)
    assert ev.steps(10) == [3, 7, 10]
    assert ev.steps(2) == [1, 2]  # fewer steps than evaluations: each step once
    assert ev.steps(1) == [1]
    assert InTrainingEval(eval_config(tiny)).steps(7) == [7]
    # The final evaluation reports the last stage even when the run has fewer steps than stages,
    # so the sweep counts that trial as completed, not stopped early.
    assert [ev.stage_of(s, 10) for s in ev.steps(10)] == [1, 2, 3]
    assert [ev.stage_of(s, 2) for s in ev.steps(2)] == [1, 3]
    assert ev.stage_of(1, 1) == 3
    with pytest.raises(ValueError, match="hf backend"):
        InTrainingEval(eval_config(tiny, backend="vllm"))
    # The final evaluation elsewhere (a sweep's exported weights): only the ones before it run here.
    before = InTrainingEval(eval_config(tiny), evaluations=3, final_here=False)
    assert before.steps(10) == [3, 7] and [before.stage_of(s, 10) for s in before.steps(10)] == [1, 2]
    assert before.steps(1) == []
    with pytest.raises(ValueError, match="evaluations must be >= 2"):
        InTrainingEval(eval_config(tiny), evaluations=1, final_here=False)


def test_non_final_evaluations_read_at_most_the_limit(tiny):
    ev = InTrainingEval(eval_config(tiny), evaluations=2, limit_before_last=2)
    assert build_tasks(ev.config_for(1, final=False))[1]["bench"]["questions"] == 2
    assert build_tasks(ev.config_for(2, final=True))[1]["bench"]["questions"] == 5


def test_live_model_scores_like_a_loaded_copy_and_training_state_is_kept(tiny, tmp_path):
    cfg = eval_config(tiny)
    model = tiny["model"].train()
    model.config.use_cache = False
    ev = InTrainingEval(cfg, evaluations=2, metric="performance", output_dir=str(tmp_path / "eval"))
    out = ev.run(model, tiny["tok"], step=4, total_steps=4, rank=0, world=1)
    assert model.training and model.config.use_cache is False  # back to training
    assert out["stage"] == 2 and out["eval/final"] and out["eval/questions"] == 5
    samples = [json.loads(line) for line in (tmp_path / "eval" / "step000004" / "samples.jsonl").open()]
    assert len(samples) == 10 and (tmp_path / "eval" / "step000004" / "scaling.png").stat().st_size > 1000
    tasks, _ = build_tasks(cfg)
    fresh = {(r["id"], r["budget"]): r for r in EvaluateBatch(cfg).run(tasks)}  # loads the saved weights
    for s in samples:
        ref = fresh[(s["id"], s["budget"])]
        assert (s["generation"], s["thinking_tokens"], s["correct"]) == (ref["generation"], ref["thinking_tokens"],
                                                                         ref["correct"])
    best = max(sum(s["correct"] is True for s in samples if s["budget"] == b) / 5 for b in (3, 5))
    assert out["score"] == pytest.approx(best)


def test_sampling_evaluation_leaves_the_training_rng_alone(tiny, tmp_path):
    ev = InTrainingEval(eval_config(tiny, temperature=0.7, seed=11), output_dir=str(tmp_path))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ev.run(tiny["model"], tiny["tok"], step=1, total_steps=1, rank=0, world=1)
    assert torch.equal(torch.rand(3), expected)  # generation reseeds; the caller's stream continues unchanged
