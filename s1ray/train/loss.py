"""The training loss, reduced per token (s1ray's default) or per example (s1).

``token_mean``: the mean over every supervised token of the global batch, so a long trace weighs
in proportion to its length. ``example_mean``: the mean over each example's own supervised
tokens, then the mean over the global batch's examples, which is what s1 trained with (HF
Trainer's default loss with one example per device, averaged over 16 devices; train/sft.py,
train/sft.sh): every example weighs the same, however long. Both are written as a weighted sum
over the micro-batch's tokens with the global batch's normaliser, so summing the micro-batches
of a step gives the step's loss whatever the split across workers and accumulation.

Examples are found by their position ids restarting at 0 (packed rows hold several); the first
token of an example is never a target (its label is masked when examples are built).
"""

from __future__ import annotations

from typing import Any, Iterable, Literal

IGNORE = -100
Reduction = Literal["token_mean", "example_mean"]


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


def lm_loss(logits: Any, labels: Any, position_ids: Any, reduction: Reduction, n_items: int) -> Any:
    """Next-token cross entropy of one micro-batch, divided by the global batch's ``n_items``:
    supervised tokens (``token_mean``) or examples with a supervised token (``example_mean``)."""
    import torch
    import torch.nn.functional as F

    if reduction not in ("token_mean", "example_mean"):
        raise ValueError(f"unknown loss reduction {reduction!r}; choose token_mean or example_mean")
    shift_logits = logits[:, :-1, :].float()
    target = labels[:, 1:]
    ce = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), target.reshape(-1),
                         ignore_index=IGNORE, reduction="none").view_as(target)
    mask = target != IGNORE
    if reduction == "token_mean":
        return (ce * mask).sum() / max(1, n_items)
    # example index of every token: position ids restart at 0 for each packed example
    seg = torch.cumsum((position_ids == 0).long(), dim=1)[:, 1:]
    width = int(seg.max()) + 1 if seg.numel() else 1
    flat = (seg + torch.arange(seg.size(0), device=seg.device)[:, None] * width).reshape(-1)
    m = mask.reshape(-1).to(ce.dtype)
    n_groups = seg.size(0) * width
    tok = torch.zeros(n_groups, dtype=ce.dtype, device=ce.device).index_add_(0, flat, m)
    tot = torch.zeros(n_groups, dtype=ce.dtype, device=ce.device).index_add_(0, flat, ce.reshape(-1) * m)
    has = tok > 0
    return (tot[has] / tok[has]).sum() / max(1, n_items)
