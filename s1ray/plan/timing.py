"""Step time, MFU and wall time of a training run, from FLOPs, bandwidths and a stated efficiency.

FLOPs per micro-batch: 6 x params x tokens (forward + backward matmuls) plus causal attention,
6 x layers x (heads x head_dim) x row_length^2 per row; gradient checkpointing runs the forward
twice (x 4/3). Compute time is those FLOPs over the device's dense bf16 peak times an assumed
hardware FLOPs utilisation (``ASSUMED_HFU``). ZeRO moves ~3 x the 16-bit model bytes per
micro-batch per rank under ZeRO-3 (all-gather in the forward, again in the backward,
reduce-scatter of the gradients) and ~2 x under ZeRO-2; with ``overlap_comm`` it hides behind
compute (the step takes the longer of the two), else it adds. MFU is the model's FLOPs (no
recompute) over the step time at peak, so it counts recompute and communication as overhead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from s1ray.plan.hardware import Hardware
from s1ray.plan.memory import Setup
from s1ray.plan.shapes import ModelShape

# Achieved fraction of dense bf16 peak while computing (recompute included). Large dense
# transformers reach ~0.5 in Megatron-style training on H100 (Megatron-LM/MLPerf reports); DeepSpeed
# ZeRO-3 with HF modules and one 32K-token row per GPU does less, so 0.45 is assumed.
ASSUMED_HFU = 0.45
CPU_HFU = 0.5  # plain PyTorch SFT here ran at ~60% of the fp32 matmul peak (stack notes); DeepSpeed a bit less


@dataclass
class Timing:
    flops_per_step: float  # model FLOPs per rank per optimizer step (no recompute)
    compute_s: float
    comm_s: float
    step_s: float
    mfu: float
    steps: int | None
    checkpoint_s: float | None
    wall_s: float | None
    device_hours: float | None


def micro_batch_flops(shape: ModelShape, s: Setup, row_tokens: float) -> float:
    """Model FLOPs of one micro-batch whose rows hold ``row_tokens`` tokens each."""
    q = shape.num_heads * shape.head_dim
    rows = s.micro_batch_size
    return 6 * shape.params * rows * row_tokens + 6 * shape.num_layers * q * rows * row_tokens ** 2


def comm_bytes_per_step(shape: ModelShape, s: Setup) -> float:
    """Bytes one rank sends per optimizer step for ZeRO's collectives (ring: (N-1)/N of the volume)."""
    n = s.num_workers
    if n == 1 or s.zero_stage == 0:
        return 0.0
    model = shape.params * s.dtype_bytes * (n - 1) / n
    if s.zero_stage == 3:
        return 3 * model * s.gradient_accumulation
    return model * s.gradient_accumulation + model  # reduce-scatter per micro-batch, all-gather after the step


def timing(shape: ModelShape, s: Setup, hw: Hardware, *, row_tokens: float, steps: int | None,
           checkpoint_bytes: list[int]) -> Timing:
    """``row_tokens``: mean tokens per row; ``steps``: optimizer steps of the run (None: unknown);
    ``checkpoint_bytes``: the size of every checkpoint the run writes."""
    flops = micro_batch_flops(shape, s, row_tokens) * s.gradient_accumulation
    peak = hw.peak_flops_bf16 if s.dtype == "bfloat16" else hw.peak_flops_fp32
    hfu = ASSUMED_HFU if hw.kind == "gpu" else CPU_HFU
    compute = flops * (4 / 3 if s.gradient_checkpointing else 1) / (peak * hfu)
    comm = comm_bytes_per_step(shape, s) / hw.comm_bw()
    step = max(compute, comm) if s.overlap_comm else compute + comm
    mfu = flops / (step * peak)
    if steps is None:
        return Timing(flops, compute, comm, step, mfu, None, None, None, None)
    ckpt = sum(checkpoint_bytes) / hw.storage_bw
    wall = steps * step + ckpt
    return Timing(flops, compute, comm, step, mfu, steps, ckpt, wall, wall * hw.devices / 3600)


def run_steps(n_examples: int, row_tokens: float, block_size: int, batching: str, global_batch: int,
              epochs: int) -> int:
    """Optimizer steps: one row per example (pad/group), or the tokens packed into block_size rows."""
    rows = n_examples if batching != "pack" else math.ceil(n_examples * row_tokens / block_size)
    return epochs * math.ceil(rows / global_batch)
