"""A plain single-process PyTorch loop over the recipe's own rows and batch plan (no Ray, no DeepSpeed).

The reference the recipe is checked against (loss agreement test) and measured against
(tests/benchmarks/bench_train.py): same rows, plan, loss, parameter groups, AdamW, gradient
clipping and LR schedule, so any difference in losses is DeepSpeed's or Ray's.
"""

from __future__ import annotations

import time
from typing import Any


def plain_run(cfg: Any, threads: int | None = None, measure_memory_at_step: int | None = None,
              max_steps: int | None = None) -> list[dict[str, Any]]:
    """Train as ``cfg`` says in this process; one record per optimizer step (loss, tokens, time, lr)."""
    import torch

    from s1ray.models.loading import build_tiny_model, load_model
    from s1ray.train.data import IGNORE, collate, epoch_plan, steps_per_epoch
    from s1ray.train.hooks import live_tensor_bytes
    from s1ray.train.loss import attach_hidden_states_loss, example_counts, lm_loss, resolve_loss_impl
    from s1ray.train.optim import lr_lambda, param_groups, torch_adamw
    from s1ray.train.trainer import prepare_data

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    rows, info = prepare_data(cfg)
    cols = {c: rows.column(c).to_pylist() for c in ("input_ids", "labels", "position_ids")}
    lengths = [len(x) for x in cols["input_ids"]]
    if cfg.loss_reduction == "example_mean":
        targets = example_counts(cols["labels"], cols["position_ids"])
    else:
        targets = [sum(t != IGNORE for t in lab) for lab in cols["labels"]]
    layout = cfg.batch_layout()
    per_step = layout["gradient_accumulation"] * layout["num_workers"]
    spe = steps_per_epoch(len(lengths), cfg.micro_batch_size, per_step)
    total = spe * cfg.epochs
    if cfg.model.startswith("tiny:"):
        model = build_tiny_model(cfg.model.split(":", 1)[1], info["vocab_size"], seed=cfg.seed)
    else:
        model = load_model(cfg.model, dtype="float32", vocab_size=info["vocab_size"])
    model.train()
    model.config.use_cache = False
    loss_impl = resolve_loss_impl(cfg.loss_impl, cfg.micro_batch_size * cfg.block_size, info["vocab_size"], "cpu")
    if loss_impl != "full":
        attach_hidden_states_loss(model, loss_impl, cfg.loss_chunk_tokens)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    opt = torch_adamw(param_groups(model, cfg.weight_decay), cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, cfg.warmup_ratio))
    recs: list[dict[str, Any]] = []
    for step in range(min(total, max_steps or total)):
        epoch, index = divmod(step, spe)
        micros = epoch_plan(lengths, cfg.batching, cfg.micro_batch_size, per_step, epoch, cfg.seed,
                            cfg.group_size_multiplier, layout["num_workers"])[index]
        n_targets = max(1, sum(targets[i] for mb in micros for i in mb))
        lr = sched.get_last_lr()[0]
        total_loss, tokens, mem = 0.0, 0, None
        live = [mb for mb in micros if mb]
        for k, mb in enumerate(live):
            b = collate([{c: cols[c][i] for c in cols} for i in mb], info["pad_id"])
            if loss_impl != "full":
                loss = model(**b, loss_reduction=cfg.loss_reduction, n_items=n_targets).loss
            elif cfg.loss_reduction == "token_mean":
                loss = model(**b, num_items_in_batch=n_targets, use_cache=False).loss
            else:
                logits = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
                loss = lm_loss(logits, b["labels"], b["position_ids"], cfg.loss_reduction, n_targets)
            loss.backward()
            if measure_memory_at_step == step + 1 and k == len(live) - 1:
                mem = live_tensor_bytes()
            total_loss += float(loss.detach())
            tokens += sum(lengths[i] for i in mb)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        recs.append({"step": step + 1, "rank": 0, "time": time.time(), "tokens": tokens, "loss": total_loss,
                     "lr": lr, **({"tensor_bytes": mem} if mem is not None else {})})
    return recs
