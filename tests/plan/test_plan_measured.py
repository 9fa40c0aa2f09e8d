"""Predicted vs measured peak memory of one tiny CPU training run (the full table:
tests/benchmarks/bench_plan_memory.py, docs/paper-scale.md "Planner validation")."""

from __future__ import annotations

import json

from s1ray.plan import hardware, plan_train
from s1ray.train.config import TrainConfig
from s1ray.train.hooks import PeakMemory
from s1ray.train.trainer import build_trainer


def test_predicted_peak_memory_is_within_25_percent_of_the_measured(ray_local, tmp_path):
    rows = [{"question": f"Add up to {i}.", "attempt": "Done.", "solution": "x",
             "thinking_trajectories": [" ".join(f"Step {k}: {i} plus {k} is {i + k}." for k in range(300))]}
            for i in range(2)]
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # one fp32 worker (no ZeRO), rows of exactly 768 tokens: the loss's 49K-wide logits and the Adam
    # state of tiny:small (15.5M params) dominate, as the vocabulary does at any size
    cfg = TrainConfig.model_validate({
        "data": {"name": "long", "path": str(data), "preset": "s1k"}, "model": "tiny:small", "dtype": "float32",
        "epochs": 1, "global_batch_size": 1, "num_workers": 1, "cpus_per_worker": 1, "block_size": 768,
        "batching": "pad", "loss_reduction": "example_mean", "storage_path": str(tmp_path / "runs"),
        "checkpoint_every_steps": 10**6, "metrics_every_steps": 10**6, "max_failures": 0,
        "logging": {"tensorboard": False, "progress_bar": False}})
    result = build_trainer(cfg, run_name="peak", hooks=[PeakMemory(str(tmp_path / "peak"), step=2)],
                           export=False).fit()
    assert result.error is None
    measured = json.loads((tmp_path / "peak" / "rank0.json").read_text())["peak_bytes"]
    plan = plan_train(cfg, hardware("cpu", 1))
    predicted = max(plan.memory.phases.values())
    assert plan.memory.peak_phase == "loss"
    assert 0.75 <= predicted / measured <= 1.25, (predicted, measured)
