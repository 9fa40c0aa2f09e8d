"""Evaluate the model being trained on its own Ray Train workers, between optimizer steps.

A sweep trial needs a score after each stage of training (ASHA stops on it) and at the end.
Exporting the weights, starting an evaluation actor pool and loading the model again costs
more than a small trial's evaluation itself; here every training worker evaluates its share
of the questions with the weights it already holds (the HF backend wrapped around the live
module), rank 0 gathers the samples, writes the usual samples / summary / scaling-plot files
and computes the score. Training then continues exactly as if nothing had happened (the RNG
state is restored and the module goes back to training mode).

Needs the full weights on every rank: :func:`require_full_weights` is the one statement of
that rule (the trainer and the sweep config call it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s1ray.evaluate.config import EvaluateConfig


def require_full_weights(zero_stage: int) -> None:
    """Evaluating on the training workers needs whole weights per rank: ZeRO stage <= 2 (3 partitions them)."""
    if zero_stage >= 3:
        raise ValueError("in-training evaluation runs the model on its training workers, which needs the full "
                         "weights on every rank (ZeRO-3 partitions them): set deepspeed.zero_stage to 2 or lower")


@dataclass
class InTrainingEval:
    """``evaluations`` evenly spaced over the run's optimizer steps, the last one at its end.

    Non-final evaluations read at most ``limit_before_last`` questions per benchmark (cheap
    early-stopping signals); the final one reads what the benchmark config says. With
    ``final_here=False`` the final one runs elsewhere (a sweep's trial evaluates its exported
    weights with vLLM): only the ``evaluations - 1`` before it run on the training workers.
    """

    cfg: EvaluateConfig
    evaluations: int = 1
    limit_before_last: int | None = None
    metric: str = "accuracy"  # see s1ray.evaluate.metrics.score_from_summary
    output_dir: str = "eval"
    final_here: bool = True

    def __post_init__(self) -> None:
        if self.evaluations < (1 if self.final_here else 2):
            raise ValueError(f"evaluations must be >= {1 if self.final_here else 2} (final_here={self.final_here}), "
                             f"got {self.evaluations}")
        if self.cfg.generation.backend != "hf":
            raise ValueError("in-training evaluation runs the model being trained (the hf backend); got "
                             f"generation.backend={self.cfg.generation.backend!r}")

    def steps(self, total_steps: int) -> list[int]:
        """The optimizer steps after which to evaluate (distinct, the last = total_steps unless not ``final_here``)."""
        steps = sorted({max(1, round(total_steps * k / self.evaluations)) for k in range(1, self.evaluations + 1)})
        return steps if self.final_here else [s for s in steps if s < total_steps]

    def stage_of(self, step: int, total_steps: int) -> int:
        """The stage an evaluation at ``step`` reports: its place among the evaluations, the final
        one always ``evaluations`` (a run with fewer steps than evaluations still ends complete)."""
        steps = self.steps(total_steps)
        return self.evaluations if self.final_here and step == steps[-1] else steps.index(step) + 1

    def config_for(self, step: int, final: bool) -> EvaluateConfig:
        raw = self.cfg.model_dump()
        raw["output_dir"] = str(Path(self.output_dir) / f"step{step:06d}")
        raw["progress"] = False
        if not final and self.limit_before_last:
            for b in raw["benchmarks"]:
                b["limit"] = min(b["limit"] or self.limit_before_last, self.limit_before_last)
        return EvaluateConfig.model_validate(raw)

    def run(self, model: Any, tokenizer: Any, step: int, total_steps: int, rank: int, world: int) -> dict[str, Any]:
        """Called by every rank at ``step``; rank 0 returns the metrics to report, the others ``{}``."""
        import torch
        import torch.distributed as dist

        from s1ray.evaluate.metrics import score_from_summary, summarize
        from s1ray.evaluate.runner import EvaluateBatch, build_tasks, write_outputs
        from s1ray.models.generation import HFGenerator

        t0 = time.perf_counter()
        steps = self.steps(total_steps)
        final = self.final_here and step == steps[-1]
        cfg = self.config_for(step, final)
        tasks, stats = build_tasks(cfg)
        mine = tasks[rank::world]  # build_tasks sorts by (method, budget): shards stay batch-friendly
        was_training, use_cache = model.training, model.config.use_cache
        device = next(model.parameters()).device
        model.eval()
        model.config.use_cache = True
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                generator = HFGenerator.from_model(model, tokenizer, cfg.generation)
                rows = EvaluateBatch(cfg, generator).run(mine) if mine else []
        finally:
            model.train(was_training)
            model.config.use_cache = use_cache
        if world > 1:
            gathered: list[Any] = [None] * world if rank == 0 else None
            dist.gather_object(rows, gathered, dst=0)
            if rank != 0:
                return {}
            rows = [r for part in gathered for r in part]
        rows.sort(key=lambda s: (s["benchmark"], s["method"], s["budget"], s["id"]))
        summary = summarize(rows, cfg.bootstrap_samples, cfg.seed)
        seconds = time.perf_counter() - t0
        write_outputs(cfg, rows, summary, stats, seconds)
        return {"score": score_from_summary(summary, self.metric), "stage": self.stage_of(step, total_steps),
                "eval/step": step, "eval/final": final, "eval/questions": sum(s["questions"] for s in stats.values()),
                "eval/dir": cfg.output_dir, "eval/seconds": seconds}
