"""The training loss, reduced per token (s1ray's default) or per example (s1), from logits or from
the last hidden states without ever holding the full logits.

``token_mean``: the mean over every supervised token of the global batch, so a long trace weighs
in proportion to its length. ``example_mean``: the mean over each example's own supervised
tokens, then the mean over the global batch's examples, which is what s1 trained with (HF
Trainer's default loss with one example per device, averaged over 16 devices; train/sft.py,
train/sft.sh): every example weighs the same, however long. Both are written as a weighted sum
over the micro-batch's tokens with the global batch's normaliser (:func:`token_weights`), so
summing the micro-batches of a step gives the step's loss whatever the split across workers and
accumulation.

Examples are found by their position ids restarting at 0 (packed rows hold several); the first
token of an example is never a target (its label is masked when examples are built).

Why a second path: the full logits of one 32,768-token row at Qwen2.5's vocabulary (152,064)
cost ~14 bytes per (token, vocab entry) at the backward peak (bf16 logits, their fp32 copy,
log-softmax, its gradient): ~70 GB, more than an H100 has left beside ZeRO-3's model state.
``chunked`` computes the per-token cross entropy from the hidden states ``loss_chunk_tokens``
rows at a time (fp32 logits of one chunk, recomputed in backward); ``liger`` does the same in
Liger-Kernel's fused Triton kernel on CUDA. Docs: docs/paper-scale.md, "The loss at long context".
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from typing import Any, Iterable, Literal

IGNORE = -100
Reduction = Literal["token_mean", "example_mean"]
LossImpl = Literal["full", "chunked", "liger"]

# ``auto`` leaves the full logits alone below this many (token, vocab entry) pairs per micro-batch
# (~1.9 GB at ~14 bytes each); above it the logits-free loss is used.
AUTO_MIN_LOGITS = 2**27
# Liger's reduction="none" gives the right gradients for per-token weights from 0.8.2 on
# (Liger-Kernel #1298: earlier releases scaled the weight gradient by a scalar upstream gradient).
LIGER_MIN_VERSION = (0, 8, 2)


def example_counts(labels: Iterable[list[int]], position_ids: Iterable[list[int]]) -> list[int]:
    """Per row: the examples holding at least one supervised target (the ``example_mean`` normaliser)."""
    out = []
    for lab, pos in zip(labels, position_ids):
        n, has = 0, False
        for t, (y, p) in enumerate(zip(lab, pos)):
            if p == 0 and t > 0:
                n += has
                has = False
            has = has or (t > 0 and p > 0 and y != IGNORE)
        out.append(n + has)
    return out


def token_weights(labels: Any, position_ids: Any, reduction: Reduction, n_items: int) -> Any:
    """The weight of each next-token target (shape ``labels[:, 1:]``, fp32) in the micro-batch's loss:
    ``loss = sum(ce * weights)``. 1/``n_items`` per supervised token (``token_mean``), or
    1/(its example's supervised tokens x ``n_items``) (``example_mean``); 0 where the label is masked."""
    import torch

    if reduction not in ("token_mean", "example_mean"):
        raise ValueError(f"unknown loss reduction {reduction!r}; choose token_mean or example_mean")
    mask = (labels[:, 1:] != IGNORE).float()
    if reduction == "token_mean":
        return mask / max(1, n_items)
    # example index of every token: position ids restart at 0 for each packed example
    seg = torch.cumsum((position_ids == 0).long(), dim=1)[:, 1:]
    width = int(seg.max()) + 1 if seg.numel() else 1
    flat = (seg + torch.arange(seg.size(0), device=seg.device)[:, None] * width).reshape(-1)
    per_example = torch.zeros(seg.size(0) * width, device=mask.device).index_add_(0, flat, mask.reshape(-1))
    return (mask.reshape(-1) / per_example[flat].clamp_min(1)).view_as(mask) / max(1, n_items)


def lm_loss(logits: Any, labels: Any, position_ids: Any, reduction: Reduction, n_items: int) -> Any:
    """Next-token cross entropy of one micro-batch from its full logits, divided by the global batch's
    ``n_items``: supervised tokens (``token_mean``) or examples with a supervised token (``example_mean``)."""
    import torch.nn.functional as F

    weights = token_weights(labels, position_ids, reduction, n_items)
    shift_logits = logits[:, :-1, :].float()
    ce = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), labels[:, 1:].reshape(-1),
                         ignore_index=IGNORE, reduction="none").view_as(weights)
    return (ce * weights).sum()


def hidden_states_loss(hidden: Any, weight: Any, labels: Any, position_ids: Any, reduction: Reduction,
                       n_items: int, impl: LossImpl = "chunked", chunk_tokens: int = 1024) -> Any:
    """:func:`lm_loss` from the last hidden states (B, T, H) and the output embedding ``weight`` (V, H),
    without the (B, T, V) logits: ``chunked`` or ``liger`` per-token cross entropy, same reductions."""
    import torch

    weights = token_weights(labels, position_ids, reduction, n_items)
    h = hidden[:, :-1, :].reshape(-1, hidden.size(-1))
    targets = labels[:, 1:].reshape(-1)
    if impl == "chunked":
        ce = chunked_cross_entropy(h, weight, targets, chunk_tokens)
    elif impl == "liger":
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        # reduction="none": per-token losses, so example_mean's per-token weights stay exact
        ce = liger_fused_linear_cross_entropy(h.contiguous(), weight, targets, ignore_index=IGNORE,
                                              reduction="none", accum_dtype=torch.float32)
    else:
        raise ValueError(f"hidden_states_loss computes chunked or liger, not {impl!r}")
    return (ce.view_as(weights) * weights).sum()


def chunked_cross_entropy(hidden: Any, weight: Any, targets: Any, chunk_tokens: int) -> Any:
    """Per-token cross entropy (N,), fp32, 0 where the target is IGNORE, of ``hidden @ weight.T``
    computed ``chunk_tokens`` rows at a time and recomputed in backward: never (N, V) at once."""
    return _chunked_function().apply(hidden, weight, targets, chunk_tokens)


@functools.cache
def _chunked_function() -> Any:
    """The autograd.Function, built on first use (importing this module does not import torch)."""
    import torch
    import torch.nn.functional as F

    class ChunkedCrossEntropy(torch.autograd.Function):
        """Forward keeps per-token logsumexp (4 bytes/token); backward recomputes each chunk's logits,
        turns them into the softmax gradient in place and accumulates the weight gradient in fp32.
        Only rows with a target are computed (prompt and padding rows cost nothing)."""

        @staticmethod
        def forward(ctx, hidden, weight, targets, chunk_tokens):
            rows = (targets != IGNORE).nonzero().squeeze(1)
            ce = torch.zeros(targets.numel(), dtype=torch.float32, device=hidden.device)
            lse = torch.zeros_like(ce)
            for s in range(0, rows.numel(), chunk_tokens):
                r = rows[s:s + chunk_tokens]
                logits = F.linear(hidden[r], weight).float()  # the model's matmul, then fp32 as in lm_loss
                picked = logits.gather(1, targets[r, None]).squeeze(1)
                top = logits.amax(dim=-1)
                # logsumexp in place: no second (chunk, V) buffer
                lse_r = logits.sub_(top[:, None]).exp_().sum(dim=-1).log_().add_(top)
                del logits
                ce[r] = lse_r - picked
                lse[r] = lse_r
            # weight.detach(): under ZeRO-3 the gathered storage stays referenced even after
            # DeepSpeed swaps the parameter's .data back to its partition
            ctx.save_for_backward(hidden, weight.detach(), targets, lse, rows)
            ctx.chunk_tokens = chunk_tokens
            return ce

        @staticmethod
        def backward(ctx, grad_ce):
            hidden, weight, targets, lse, rows = ctx.saved_tensors
            grad_hidden = torch.zeros_like(hidden)
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            g = grad_ce.float()
            for s in range(0, rows.numel(), ctx.chunk_tokens):
                r = rows[s:s + ctx.chunk_tokens]
                h = hidden[r]
                p = F.linear(h, weight).float().sub_(lse[r, None]).exp_()  # softmax of the chunk
                p[torch.arange(r.numel(), device=p.device), targets[r]] -= 1
                grad_logits = p.mul_(g[r, None]).to(hidden.dtype)
                del p
                grad_hidden[r] = grad_logits @ weight
                grad_weight.add_(grad_logits.t() @ h)
                del grad_logits
            return grad_hidden, grad_weight.to(weight.dtype), None, None

    return ChunkedCrossEntropy


# ---------------------------------------------------------------------------- choosing the path
def _version(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def liger_available() -> bool:
    """Liger-Kernel's fused linear cross entropy imports, at a release whose reduction="none" is exact."""
    try:
        importlib.import_module("liger_kernel.transformers.functional").liger_fused_linear_cross_entropy  # noqa: B018
        version = importlib.metadata.version("liger-kernel")
    except (ImportError, AttributeError, importlib.metadata.PackageNotFoundError):
        return False
    return _version(version) >= LIGER_MIN_VERSION


def resolve_loss_impl(loss_impl: str, tokens_per_micro_batch: int, vocab_size: int, device_type: str,
                      liger: bool | None = None) -> LossImpl:
    """The loss path a run uses (``TrainConfig.loss_impl``; ``liger``: whether Liger imports, found out when None).

    ``auto``: the full logits while a micro-batch's tokens x vocabulary stay under
    ``AUTO_MIN_LOGITS`` (2^27, ~1.9 GB of loss memory: small models, short blocks); above it
    Liger on CUDA when liger-kernel (>= 0.8.2) imports, else ``chunked``.
    """
    from s1ray.config import ConfigError

    if loss_impl == "full":
        return "full"
    if loss_impl == "chunked":
        return "chunked"
    has_liger = liger_available() if liger is None else liger
    if loss_impl == "liger":
        if device_type != "cuda":
            raise ConfigError("loss_impl: liger runs Triton kernels on CUDA only; use loss_impl: chunked "
                              f"(or auto) on {device_type}")
        if not has_liger:
            raise ConfigError("loss_impl: liger needs liger-kernel>="
                              f"{'.'.join(map(str, LIGER_MIN_VERSION))} (pip install 's1ray[gpu]'); "
                              "or use loss_impl: chunked")
        return "liger"
    if loss_impl != "auto":
        raise ConfigError(f"loss_impl: unknown value {loss_impl!r}; choose auto, full, chunked or liger")
    if tokens_per_micro_batch * vocab_size < AUTO_MIN_LOGITS:
        return "full"
    return "liger" if device_type == "cuda" and has_liger else "chunked"


def attach_hidden_states_loss(model: Any, impl: LossImpl, chunk_tokens: int) -> None:
    """Let ``model(input_ids=, position_ids=, labels=, loss_reduction=, n_items=)`` return only the loss
    (``.loss``), computed by :func:`hidden_states_loss` from the decoder's last hidden states.

    The loss runs inside the model's forward, so inside DeepSpeed's ``engine(...)``: its backward
    hooks then start before the output embedding's gradient arrives, as for the full logits. Calls
    without ``loss_reduction`` (generation, evaluation) are the model's own forward. Under ZeRO-3
    the caller registers the output embedding as an external parameter of ``model``
    (``deepspeed.zero.register_external_parameter``) so it is gathered for this forward.
    """
    from transformers.modeling_outputs import CausalLMOutputWithPast

    head = model.get_output_embeddings()
    name = type(model).__name__
    if head is None or getattr(head, "bias", None) is not None:
        raise ValueError(f"loss_impl {impl}: {name} needs an output embedding without bias")
    for key in ("final_logit_softcapping", "logit_scale"):
        if getattr(model.config, key, None) not in (None, 1.0):
            raise ValueError(f"loss_impl {impl}: {name} transforms its logits ({key}); use loss_impl: full")
    decoder = model.get_decoder()
    own_forward = model.forward

    def forward(input_ids=None, position_ids=None, labels=None, loss_reduction=None, n_items=None, **kwargs):
        if loss_reduction is None:
            return own_forward(input_ids=input_ids, position_ids=position_ids, labels=labels, **kwargs)
        kwargs["use_cache"] = False
        hidden = decoder(input_ids=input_ids, position_ids=position_ids, **kwargs).last_hidden_state
        loss = hidden_states_loss(hidden, head.weight, labels, position_ids, loss_reduction, n_items, impl,
                                  chunk_tokens)
        return CausalLMOutputWithPast(loss=loss)

    model.forward = forward
