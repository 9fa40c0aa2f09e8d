"""The recipe's pure parts, without Ray: the engine's ZeRO stage rule, the LR schedule, the hooks."""

from pathlib import Path

import pytest

from s1ray.train.config import TrainConfig
from s1ray.train.deepspeed_config import build_ds_config, engine_zero_stage
from s1ray.train.hooks import FailOnce, StepRecord, StepTrace
from s1ray.train.optim import lr_lambda


def cfg(**kw) -> TrainConfig:
    return TrainConfig.model_validate({"data": {"name": "x", "path": "x.jsonl"}, "model": "tiny:tiny",
                                       "global_batch_size": 4, **kw})


def test_one_float32_worker_runs_without_zero_everything_else_keeps_its_stage():
    assert engine_zero_stage(cfg(num_workers=1), "float32") == 0
    assert build_ds_config(cfg(num_workers=1), "float32")["zero_optimization"] == {"stage": 0}
    assert engine_zero_stage(cfg(num_workers=2, deepspeed={"zero_stage": 2}), "float32") == 2
    assert engine_zero_stage(cfg(num_workers=1, deepspeed={"zero_stage": 2}), "bfloat16") == 2
    assert engine_zero_stage(cfg(num_workers=1, deepspeed={"zero_stage": 2, "zero_with_one_worker": True}),
                             "float32") == 2
    offload = {"zero_stage": 3, "offload_optimizer": True, "optimizer": "deepspeed"}
    assert engine_zero_stage(cfg(num_workers=1, deepspeed=offload), "float32") == 3


def test_schedule_warms_up_from_zero_then_decays_to_zero():
    fn = lr_lambda(20, 0.1)  # 2 warmup steps
    assert [fn(s) for s in range(3)] == [0.0, 0.5, 1.0]
    assert fn(19) == pytest.approx(0.5 * (1 + __import__("math").cos(__import__("math").pi * 17 / 18)))
    assert all(fn(s) >= fn(s + 1) for s in range(2, 19))


def rec(step: int, rank: int = 0) -> StepRecord:
    return StepRecord(step=step, rank=rank, loss=1.5, tokens=10, step_tokens=20, examples=[[["a"]]], lr=0.1,
                      grad_norm=2.0)


def test_fail_once_fails_at_its_step_and_rank_only_once(tmp_path):
    hook = FailOnce(step=3, marker=str(tmp_path / "m"), rank=1)
    hook.on_step_end(rec(3, rank=0))
    hook.on_step_end(rec(2, rank=1))
    with pytest.raises(RuntimeError, match="injected failure at step 3 on rank 1"):
        hook.on_step_end(rec(3, rank=1))
    hook.on_step_end(rec(3, rank=1))  # the marker remembers: a restarted worker goes on
    assert Path(tmp_path / "m").exists()


def test_step_trace_appends_one_line_per_step_and_the_measured_memory(tmp_path):
    import json

    hook = StepTrace(str(tmp_path / "trace"), measure_memory_at_step=2)
    hook.on_setup(rank=1, world=2)
    assert hook.after_backward(1, 0, 2) == {}
    assert hook.after_backward(2, 0, 2) == {}  # not the step's last micro-batch
    measured = hook.after_backward(2, 1, 2)["tensor_bytes"]
    for s in (1, 2):
        hook.on_step_end(rec(s, rank=1))
    hook.close()
    lines = [json.loads(x) for x in (tmp_path / "trace" / "rank1.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and "tensor_bytes" not in lines[0]
    assert lines[1]["tensor_bytes"] == measured and lines[0]["examples"] == [[["a"]]]


def test_checkpoint_steps_by_step_count_by_epoch_or_both():
    """63 steps per epoch (s1K at global batch 16): every 50 steps, at each epoch's end, or both."""
    def steps(**kw):
        return [s for s in range(1, 316) if cfg(**kw).is_checkpoint_step(s, 63)]

    assert steps() == [50, 100, 150, 200, 250, 300]  # the default: every 50 steps
    assert steps(checkpoint_every_steps=None, checkpoint_every_epochs=1) == [63, 126, 189, 252, 315]
    assert steps(checkpoint_every_steps=None, checkpoint_every_epochs=2) == [126, 252]
    assert steps(checkpoint_every_steps=100, checkpoint_every_epochs=2) == [100, 126, 200, 252, 300]
    assert steps(checkpoint_every_steps=None) == []  # no intermediate checkpoints (the final one still)
    with pytest.raises(ValueError, match="checkpoint_every_epochs"):
        cfg(checkpoint_every_epochs=0)
