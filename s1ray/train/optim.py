"""The optimisation rule shared by the recipe and its plain-PyTorch reference: parameter groups and LR schedule.

Both paths must build these the same way, or their losses part after the first step (the
benchmark's plain loop once ran at a constant LR while the recipe warmed up from 0).
"""

from __future__ import annotations

import math
from typing import Any, Callable


def lr_lambda(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """Linear warmup over ``warmup_ratio`` of the steps, then cosine decay to 0 (HF's schedule).

    The factor for step ``s`` (0-based) is applied to step ``s``'s update; with any warmup the
    first update is taken at LR 0, as HF Trainer does.
    """
    warmup = math.ceil(total_steps * warmup_ratio)

    def fn(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return fn


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and norm weights (1-D tensors), as HF Trainer does."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def torch_adamw(groups: list[dict[str, Any]], cfg: Any) -> Any:
    """torch.optim.AdamW with the config's LR, betas and eps (weight decay comes per group)."""
    import torch

    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay)
