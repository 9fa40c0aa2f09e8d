"""The planner: model sizes, DeepSpeed's model-state estimators, the s1 paper-run anchors, suggestions."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from dataclasses import replace

import pytest

from s1ray.config import load_config
from s1ray.configs import find_config
from s1ray.plan import Setup, hardware, memory, model_shape, plan, plan_train
from s1ray.plan.hardware import GiB
from s1ray.train.config import TrainConfig

QWEN32B = "Qwen/Qwen2.5-32B-Instruct"


def paper_config(**changes) -> TrainConfig:
    cfg = load_config(TrainConfig, find_config("train_s1_qwen32b"))
    return cfg.model_copy(update=changes)


def test_parameter_counts_match_a_model_built_from_the_same_config(tmp_path):
    """Shapes read from a saved HF folder count exactly the parameters torch holds, and DeepSpeed's
    largest-module figure (what its ZeRO-3 estimator adds)."""
    from deepspeed.runtime.zero.stage3 import model_to_params
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path)
    total, largest = model_to_params(Qwen2ForCausalLM(config))
    shape = model_shape(str(tmp_path))
    assert (shape.params, shape.largest_module_params) == (total, largest)
    assert model_shape(QWEN32B).params == 32_763_876_352  # 32.76B, as published


def _ds_all_cold_gpu_gib(fn, **kw) -> float:
    """The per-GPU figure DeepSpeed's *_all_cold estimator prints for no offload (zero_init=1 where listed)."""
    out = io.StringIO()
    with redirect_stdout(out):
        fn(**kw)
    for line in out.getvalue().splitlines():
        if "offload_optimizer=none" in line and "offload_param=cpu" not in line and "zero_init=0" not in line:
            return float(re.findall(r"([\d.]+)GB", line)[1])
    raise AssertionError(out.getvalue())


def test_model_states_agree_with_deepspeed_estimators():
    from deepspeed.runtime.zero.stage3 import (estimate_zero3_model_states_mem_needs,
                                               estimate_zero3_model_states_mem_needs_all_cold)
    from deepspeed.runtime.zero.stage_1_and_2 import (estimate_zero2_model_states_mem_needs,
                                                      estimate_zero2_model_states_mem_needs_all_cold)

    shape = model_shape(QWEN32B)
    p, big = shape.params, shape.largest_module_params
    hw = hardware("h100-80gb", 16)
    c = memory(shape, Setup(block_size=1024, num_workers=16, zero_stage=3), hw).components
    states = c["weights"] + c["gradients"] + c["optimizer state (fp32 master + Adam)"]
    # ZeRO-3: DeepSpeed counts 18 B/param over the ranks plus 4 B/param of the largest module. The planner
    # has 16 B/param resident (bf16 weights and gradients, fp32 master and Adam) plus the same gathered
    # module in the backward, and 20 B/param at the step (the fp32 gradient copy): DeepSpeed's lies between.
    _, ds3, ds3_largest = estimate_zero3_model_states_mem_needs(p, big, 8, 2, cpu_offload=False,
                                                                cpu_offload_params=False)
    assert c["ZeRO-3 gathered module + its gradient"] == ds3_largest
    backward, step = states + ds3_largest, states + c["fp32 gradients (optimizer step)"]
    assert backward < ds3 < step
    assert ds3 - backward == pytest.approx(2 * p / 16)  # DeepSpeed's 18 vs the resident 16 B/param
    assert step - ds3 == pytest.approx(2 * p / 16 - 4 * big)  # the step's 20 B/param, without the gathered module
    printed = _ds_all_cold_gpu_gib(estimate_zero3_model_states_mem_needs_all_cold, total_params=p,
                                   largest_layer_params=big, num_gpus_per_node=8, num_nodes=2)
    assert printed == pytest.approx(ds3 / GiB, abs=0.01)
    assert ds3 / GiB == pytest.approx(37.23, abs=0.01) and step / GiB == pytest.approx(38.14, abs=0.01)
    # ZeRO-2: 2 B/param whole + 18 B/param over the ranks, exactly the planner's step phase.
    c2 = memory(shape, Setup(block_size=1024, num_workers=16, zero_stage=2), hw).components
    step2 = sum(c2[k] for k in ("weights", "gradients", "fp32 gradients (optimizer step)",
                                "optimizer state (fp32 master + Adam)"))
    _, ds2 = estimate_zero2_model_states_mem_needs(p, 8, 2, cpu_offload=False)
    assert step2 == pytest.approx(ds2, rel=1e-9)
    printed2 = _ds_all_cold_gpu_gib(estimate_zero2_model_states_mem_needs_all_cold, total_params=p,
                                    num_gpus_per_node=8, num_nodes=2)
    assert printed2 == pytest.approx(step2 / GiB, abs=0.01)


def test_paper_run_at_32k_with_full_logits_does_not_fit():
    p = plan_train(paper_config(), hardware("h100-80gb", 16), loss_impl="full")
    assert not p.fits and p.memory.peak_phase == "loss"
    loss = p.memory.components["loss peak (full)"]
    assert loss / 32768 == 14 * 152064  # bf16 logits kept + fp32 log-softmax, its gradient, the logits' gradient
    assert p.memory.components["activation checkpoints"] == 64 * 5120 * 2 * 32768  # 21.5 GB
    fixes = {tuple(s.overrides) for s in p.suggestions if s.fits}
    assert ("loss_impl",) in fixes and ("block_size",) in fixes
    for s in p.suggestions:  # every suggestion was re-planned
        assert s.fits == (s.peak_bytes <= p.capacity)


def test_paper_run_at_20k_fits_with_a_chunked_loss_but_not_with_full_logits():
    """s1.1 trained at block 20,000 on the same GPUs (FSDP, HF Trainer). s1ray's DeepSpeed run keeps the
    bf16 logits through the backward, and honest arithmetic puts the full-logits loss phase ~12 GiB over
    80 GB (docs/paper-scale.md, "Planner validation"); with the chunked loss it fits with room to spare."""
    hw = hardware("h100-80gb", 16)
    full = plan_train(paper_config(block_size=20000), hw, loss_impl="full")
    assert not full.fits and 0 < (full.peak - full.capacity) / GiB < 15
    chunked = plan_train(paper_config(block_size=20000), hw, loss_impl="chunked")
    assert chunked.fits and chunked.peak / GiB < 65
    assert plan_train(paper_config(), hw, loss_impl="chunked").fits  # and at 32K too
    held = full.setup
    released = memory(model_shape(QWEN32B), replace(held, logits_held_in_backward=False), hw)
    assert released.components["loss peak (full)"] == 12 * 152064 * 20000


def test_the_largest_block_size_suggested_is_the_largest_that_fits():
    hw = hardware("h100-80gb", 16)
    p = plan_train(paper_config(), hw, loss_impl="full")
    block = next(s for s in p.suggestions if "block_size" in s.overrides).overrides["block_size"]
    assert plan_train(paper_config(block_size=block), hw, loss_impl="full").fits
    assert not plan_train(paper_config(block_size=block + 1024), hw, loss_impl="full").fits


def test_more_memory_or_more_gpus_fit_what_16_h100s_do_not():
    cfg = paper_config(block_size=20000)
    assert plan_train(cfg, hardware("h200", 16), loss_impl="full").fits
    more = plan_train(cfg, hardware("h100-80gb", 16), loss_impl="full").suggestions
    gpus = [s for s in more if "num_workers" in s.overrides and s.fits]
    assert gpus and gpus[0].overrides == {"num_workers": 32, "global_batch_size": 32}


def test_time_wall_and_gpu_hours_follow_the_stated_assumptions():
    p = plan_train(paper_config(), hardware("h100-80gb", 16), loss_impl="chunked")
    t = p.timing
    assert t.steps == 315  # ceil(1000 / 16) x 5 epochs, the paper's count
    tokens = 32768
    model_flops = 6 * p.params * tokens + 6 * 64 * 5120 * tokens ** 2
    assert t.flops_per_step == pytest.approx(model_flops)
    assert t.compute_s == pytest.approx(model_flops * 4 / 3 / (989e12 * 0.45))
    assert t.comm_s == pytest.approx(3 * p.params * 2 * 15 / 16 / 50e9)
    assert t.step_s == max(t.compute_s, t.comm_s) and t.mfu == pytest.approx(model_flops / (t.step_s * 989e12))
    assert t.wall_s == pytest.approx(315 * t.step_s + t.checkpoint_s)
    assert t.device_hours == pytest.approx(t.wall_s * 16 / 3600)
    shorter = plan_train(paper_config(), hardware("h100-80gb", 16), loss_impl="chunked", mean_tokens=8000)
    assert shorter.timing.wall_s < t.wall_s and shorter.peak == p.peak  # memory sizes the longest row


def test_without_checkpointing_every_layers_activations_count():
    shape = model_shape("Qwen/Qwen2.5-0.5B-Instruct")
    hw = hardware("h100-80gb", 1)
    on = memory(shape, Setup(block_size=4096, zero_stage=2), hw)
    off = memory(shape, Setup(block_size=4096, zero_stage=2, gradient_checkpointing=False), hw)
    assert off.components["activations (no checkpointing)"] == on.no_checkpointing_activations
    assert off.peak > on.peak and "backward" not in off.phases


def test_unknown_model_is_named():
    from s1ray.plan import PlanError

    with pytest.raises(PlanError, match="no-such/model"):
        model_shape("no-such/model")


def test_plan_function_takes_a_setup_without_a_config():
    shape = model_shape("tiny:small")
    p = plan(shape, Setup(block_size=256, zero_stage=2, num_workers=2, dtype="float32"), hardware("cpu", 2),
             n_examples=8, global_batch=2)
    assert p.fits and p.timing.steps == 4 and p.memory.peak_phase in p.memory.phases
