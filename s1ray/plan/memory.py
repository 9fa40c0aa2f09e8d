"""Per-device memory of one training step, component by component and phase by phase.

The peak is the largest of the step's phases, not the sum of every component:

* ``loss``: the end of the forward pass and the loss's backward, with every layer's
  activation checkpoint (or, without checkpointing, every layer's activations) alive and the
  loss's largest buffers;
* ``backward``: one layer recomputed (checkpointing) and back-propagated, all earlier
  checkpoints still alive;
* ``step``: the optimizer step, where DeepSpeed turns the gradient partition into fp32.

Model states follow DeepSpeed's accounting (``estimate_zero2/3_model_states_mem_needs``):
16-bit weights (whole under ZeRO-2, 1/N under ZeRO-3), 16-bit gradient partition, fp32 master
weights and Adam moments (12 B/param over N), the fp32 gradient copy (4 B/param over N) during
the step, and under ZeRO-3 the largest module gathered with its gradient (4 B/param at bf16).
Activation bytes are counted tensor by tensor for the Llama/Qwen2 layer of transformers 5
(RMSNorm in fp32, SDPA/flash attention that keeps q, k, v, output and log-sum-exp, SwiGLU) --
see ``layer_activation_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s1ray.plan.hardware import Hardware
from s1ray.plan.shapes import ModelShape, PlanError

LOSS_IMPLS = ("full", "chunked", "liger")
DEFAULT_LOSS_CHUNK_TOKENS = 1024  # TrainConfig.loss_chunk_tokens's default (s1ray/train/config.py)
ALLOCATOR_RESERVE = 0.05  # GPU: what PyTorch's caching allocator holds beyond live tensors (fragmentation)


@dataclass(frozen=True)
class Setup:
    """The training settings memory and time depend on (resolved from a TrainConfig, see planner)."""

    block_size: int
    micro_batch_size: int = 1
    gradient_accumulation: int = 1
    num_workers: int = 1
    zero_stage: int = 3  # the engine's: 0 (one fp32 worker, no ZeRO), 2 or 3
    offload_optimizer: bool = False
    offload_params: bool = False
    gradient_checkpointing: bool = True
    dtype: str = "bfloat16"
    loss_impl: str = "full"
    loss_chunk_tokens: int = DEFAULT_LOSS_CHUNK_TOKENS
    reduce_bucket_size: int = 50_000_000
    prefetch_bucket_size: int = 50_000_000
    overlap_comm: bool = True
    logits_held_in_backward: bool = True  # s1ray's loop keeps the forward's output (its logits) until backward ends

    def __post_init__(self) -> None:
        if self.loss_impl not in LOSS_IMPLS:
            raise PlanError(f"loss_impl {self.loss_impl!r}: the planner knows {', '.join(LOSS_IMPLS)}")
        if self.zero_stage not in (0, 2, 3):
            raise PlanError(f"zero_stage {self.zero_stage}: expected 0, 2 or 3")

    @property
    def dtype_bytes(self) -> int:
        return 2 if self.dtype == "bfloat16" else 4

    @property
    def tokens(self) -> int:
        """Tokens in one micro-batch (rows are at most block_size long)."""
        return self.micro_batch_size * self.block_size


@dataclass
class Memory:
    """Bytes per device. ``components``: each at its own largest; ``phases``: live tensors in each phase."""

    components: dict[str, int]
    phases: dict[str, int]
    reserve: int  # allocator reserve + context, added to the largest phase
    no_checkpointing_activations: int  # for comparison: every layer's activations kept
    notes: list[str] = field(default_factory=list)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.get)

    @property
    def peak(self) -> int:
        return self.phases[self.peak_phase] + self.reserve


def layer_activation_bytes(shape: ModelShape, c: int) -> int:
    """Bytes per token one decoder layer saves for its backward pass (``c``: bytes of the compute dtype).

    Each RMSNorm saves its input in fp32 (4h), its normalised output (c*h) and the scaled output the
    next matmul reads (c*h); attention saves q, k, v and its output (flash/SDPA, no s x s matrix) and
    o_proj's contiguous input; the SwiGLU MLP saves gate, up, silu(gate) and their product (4 x I).
    In fp32 the RMSNorm's fp32 "copy" is its input itself, still kept alive by the saved graph.
    """
    h, kv, inter = shape.hidden_size, shape.kv_width, shape.intermediate_size
    q = shape.num_heads * shape.head_dim
    norms = 2 * (4 * h + 2 * c * h)
    attention = c * (q + 2 * kv + q + h)
    mlp = 4 * c * inter
    return norms + attention + mlp


def backward_transient_bytes(shape: ModelShape, c: int) -> int:
    """Bytes per token alive on top of a layer's saved tensors while it is back-propagated: the MLP's
    activation gradients (three of width I at once) and the residual stream's gradient (two of width h)."""
    return c * (3 * shape.intermediate_size + 2 * shape.hidden_size)


def loss_bytes(shape: ModelShape, s: Setup) -> int:
    """The loss's largest buffers (bytes) for one micro-batch.

    ``full``: the logits (c bytes x vocab per token, kept by the forward's output), their fp32 copy
    and log-softmax, and in the backward the log-softmax's output, its gradient and the logits'
    fp32 gradient: (c + 12) x vocab per token (14 B at bf16), plus 4 B in the forward's fp32 copy
    when the logits are bf16 (transient, smaller than the backward). ``chunked``: the same for one
    chunk of ``loss_chunk_tokens`` (fp32 logits recomputed in the backward) plus the hidden
    states' fp32 gradient. ``liger``: fused linear cross-entropy: one chunk of bf16 logits
    (chunk = next power of two of tokens / ceil(vocab / hidden)), the input's gradient and the
    output head's fp32 gradient, computed in the forward.
    """
    c, v, h, t = s.dtype_bytes, shape.vocab_size, shape.hidden_size, s.tokens
    held = c if s.logits_held_in_backward else 0
    if s.loss_impl == "full":
        return t * v * (held + 12)
    if s.loss_impl == "chunked":
        chunk = min(t, s.loss_chunk_tokens)
        return chunk * v * (c + 12) + t * h * 4
    inc = -(-v // h)
    chunk = 1 << max(0, (-(-t // inc) - 1).bit_length())
    return min(t, chunk) * v * (c + 4) + t * h * c + v * h * 4


def memory(shape: ModelShape, s: Setup, hw: Hardware) -> Memory:
    """Per-device bytes by component and phase for ``s`` on ``hw`` (see the module docstring)."""
    p, n, c = shape.params, s.num_workers, s.dtype_bytes
    stage = s.zero_stage
    shard = (lambda b: b / n) if stage else (lambda b: b)
    on_gpu = hw.kind == "gpu"
    # weights: the compute-dtype copy; ZeRO-3 partitions it (or keeps it on CPU with offload_params)
    weights = 0 if (s.offload_params and on_gpu) else (p * c / n if stage == 3 else p * c)
    if stage == 0:  # one fp32 worker without ZeRO: torch AdamW, weights are the master copy
        grads, fp32_grads, optimizer = p * c, 0.0, 8.0 * p
    elif s.offload_optimizer and on_gpu:  # gradients stream to the CPU, Adam runs there
        grads, fp32_grads, optimizer = 0.0, 0.0, 0.0
    else:
        grads, fp32_grads, optimizer = shard(p * c), shard(4.0 * p), shard(12.0 * p)
    gathered = 2 * c * shape.largest_module_params if stage == 3 else 0
    t = s.tokens
    per_layer = layer_activation_bytes(shape, c) * t
    checkpoint = shape.hidden_size * c * t  # a checkpointed layer keeps its input only
    if s.gradient_checkpointing:
        stored = shape.num_layers * checkpoint
    else:
        stored = shape.num_layers * per_layer
    final_norm = (4 * shape.hidden_size + 2 * c * shape.hidden_size) * t
    recompute = per_layer + backward_transient_bytes(shape, c) * t
    loss = loss_bytes(shape, s)
    if stage == 3:
        buffers = (s.reduce_bucket_size + s.prefetch_bucket_size) * c
    elif stage == 2:
        buffers = s.reduce_bucket_size * c * (2 if s.overlap_comm else 1)
    else:
        buffers = 0
    states = weights + grads + optimizer
    phases = {"loss": states + gathered + stored + final_norm + loss + buffers}
    if s.gradient_checkpointing:
        phases["backward"] = states + gathered + stored + recompute + buffers
    phases["step"] = states + fp32_grads + buffers
    tensor_peak = max(phases.values())
    reserve = (ALLOCATOR_RESERVE * tensor_peak if on_gpu else 0) + hw.context_bytes
    components = {
        "weights": weights,
        "gradients": grads,
        "fp32 gradients (optimizer step)": fp32_grads,
        "optimizer state (fp32 master + Adam)": optimizer,
        "ZeRO-3 gathered module + its gradient": gathered,
        ("activation checkpoints" if s.gradient_checkpointing else "activations (no checkpointing)"): stored,
        "final norm": final_norm,
        "one layer's recompute + backward": recompute if s.gradient_checkpointing else 0,
        f"loss peak ({s.loss_impl})": loss,
        "communication buffers": buffers,
        ("CUDA context + NCCL" if on_gpu else "worker process"): hw.context_bytes,
        "allocator reserve": ALLOCATOR_RESERVE * tensor_peak if on_gpu else 0,
    }
    return Memory(components={k: int(v) for k, v in components.items()},
                  phases={k: int(v) for k, v in phases.items()}, reserve=int(reserve),
                  no_checkpointing_activations=int(shape.num_layers * per_layer))


def s1_trainer_loss_phase(shape: ModelShape, block_size: int, num_gpus: int) -> dict[str, int]:
    """Live bytes per GPU at the loss of **s1's own trainer**, the setup behind s1.1's "block size
    20000 to avoid OOM" on 16 H100s: the planner's anchor (docs/paper-scale.md, "Planner validation").

    s1 trained with HF Trainer + PyTorch FSDP full-shard (train/sft.sh; transformers 4.46.1,
    torch 2.5.1), bf16 autocast over fp32 weights, gradient checkpointing, HF's full-logits loss.
    Two differences from s1ray's ZeRO-3 decide the anchor: FSDP keeps fp32 weights only (no
    separate 16-bit copy) and holds **no gradients until the backward** (the Trainer zeroes them
    with ``set_to_none``), so its model states in the loss phase are 12 B/param over N, where
    ZeRO-3 keeps 16 (16-bit weights and a preallocated 16-bit gradient partition, see
    ``deepspeed/runtime/zero/stage3.py`` ``grad_partitions_flat_buffer``). FSDP's root unit
    (embeddings, final norm, output head) stays gathered in bf16 through the forward. HF 4.46's
    ``ForCausalLMLoss`` holds the bf16 logits, an fp32 copy and a shifted contiguous fp32 copy while
    log-softmax writes its fp32 output: 14 B x vocab per token.
    """
    t, h, v = block_size, shape.hidden_size, shape.vocab_size
    head = 0 if shape.tied_embeddings else shape.embedding_params
    parts = {
        "fp32 weights + Adam (12 B/param / N; no gradients yet)": 12 * shape.params / num_gpus,
        "root FSDP unit gathered in bf16 (embeddings, output head)": 2 * (shape.embedding_params + head),
        "activation checkpoints": shape.num_layers * h * 2 * t,
        "final norm": (4 * h + 2 * 2 * h) * t,
        "HF loss (bf16 logits, fp32 copy, shifted copy, log-softmax)": 14 * v * t,
    }
    return {k: int(x) for k, x in parts.items()}
