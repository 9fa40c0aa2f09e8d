"""Stragglers: per-step rank imbalance with s1's random batching (``pad``) vs ``balance``.

    PYTHONPATH=. RAY_TMPDIR=/tmp/ray-bench .venv/bin/python tests/benchmarks/bench_stragglers.py --out /tmp/bench_stragglers

Ray Train + DeepSpeed ZeRO-2 on CPU, 2 workers x 2 accumulation steps (global batch 4), one
example per row, a small Llama (tiny:small) on s1K-shaped rows whose lengths spread like
s1K-1.1's (log-normal, max ~2.4x the mean). Each rank records the CPU time of its own thread per
step (``time.thread_time``: compute, not time spent blocked in gloo's all-reduce) and the wall
time per step. Reported per run: the mean over steps of max/mean rank CPU time (1.0 = no rank
waits), the wall time of the epoch, and :func:`s1ray.train.data.waiting_fraction`'s prediction
for the same rows and plan. Compare ratios, not absolutes: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "s1ray" / "torch_extensions"))
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

from s1ray.train.hooks import TrainHooks  # noqa: E402


@dataclass
class StepClock(TrainHooks):
    """One JSON line per step and rank: this thread's CPU seconds and the wall seconds of the step."""

    folder: str
    lines: list = field(default_factory=list)

    def on_setup(self, rank: int, world: int) -> None:
        self.rank, self.cpu, self.wall = rank, time.thread_time(), time.perf_counter()

    def on_step_end(self, rec) -> None:
        cpu, wall = time.thread_time(), time.perf_counter()
        self.lines.append({"step": rec.step, "rank": self.rank, "cpu_s": cpu - self.cpu, "wall_s": wall - self.wall,
                           "tokens": rec.tokens})
        self.cpu, self.wall = cpu, wall

    def close(self) -> None:
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        (Path(self.folder) / f"rank{self.rank}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in self.lines))


def make_rows(path: Path, n: int, mean_steps: float) -> Path:
    """s1K-shaped rows; the trace's number of sentences is log-normal (sigma 0.28, like s1K-1.1's lengths)."""
    from statistics import NormalDist

    rows = []
    for i in range(n):
        k = max(1, int(mean_steps * math.exp(0.28 * NormalDist().inv_cdf((i * 7919 % n + 0.5) / n) - 0.04)))
        body = " ".join(f"Step {j}: {i} plus {j} is {i + j}." for j in range(k))
        rows.append({"question": f"Add up to {i}.", "thinking_trajectories": [body], "attempt": f"{i}.",
                     "solution": str(i)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(data: Path, out: Path, batching: str, n: int) -> dict:
    from s1ray.train.config import TrainConfig
    from s1ray.train.data import waiting_fraction
    from s1ray.train.trainer import build_trainer, prepare_data

    cfg = TrainConfig.model_validate({
        "data": {"name": "bench", "path": str(data), "preset": "s1k"}, "model": "tiny:small", "dtype": "float32",
        "epochs": 1, "lr": 1e-4, "global_batch_size": 4, "num_workers": 2, "block_size": 2048, "batching": batching,
        "deepspeed": {"zero_stage": 2}, "storage_path": str(out / "runs"), "run_name": f"strag-{batching}",
        "checkpoint_every_steps": 10_000, "metrics_every_steps": 10_000, "output_dir": str(out / batching / "model"),
        "logging": {"progress_bar": False, "tensorboard": False}, "ray": {"num_cpus": 2}})
    rows, _ = prepare_data(cfg)
    lengths = [len(x) for x in rows.column("input_ids").to_pylist()]
    trace = out / f"trace-{batching}"
    t = time.perf_counter()
    result = build_trainer(cfg, hooks=[StepClock(str(trace))]).fit()
    wall = time.perf_counter() - t
    assert result.error is None, result.error
    recs = [json.loads(x) for f in sorted(trace.glob("rank*.jsonl")) for x in f.read_text().splitlines()]
    by_step: dict[int, list] = {}
    for r in recs:
        by_step.setdefault(r["step"], []).append(r)
    steps = [v for s, v in sorted(by_step.items()) if s > 1 and len(v) == 2]  # step 1 pays one-off costs
    ratio = [max(r["cpu_s"] for r in v) / statistics.mean(r["cpu_s"] for r in v) for v in steps]
    return {"batching": batching, "examples": n, "steps": len(steps) + 1, "fit_wall_s": round(wall, 1),
            "step_wall_s_mean": round(statistics.mean(max(r["wall_s"] for r in v) for v in steps), 3),
            "rank_cpu_max_over_mean": round(statistics.mean(ratio), 3),
            "rank_cpu_s_total": round(sum(r["cpu_s"] for v in steps for r in v), 1),
            "predicted_waiting_fraction": round(waiting_fraction(lengths, 2, batching, gradient_accumulation=2), 4),
            "row_tokens_mean": round(statistics.mean(lengths)), "row_tokens_max": max(lengths)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_stragglers"))
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--mean-steps", type=float, default=40.0, help="sentences per trace on average")
    a = p.parse_args()
    import ray

    from s1ray.cluster import init_ray
    from s1ray.config import RayConfig

    a.out.mkdir(parents=True, exist_ok=True)
    init_ray(RayConfig(num_cpus=2))
    data = make_rows(a.out / "rows.jsonl", a.examples, a.mean_steps)
    results = [run(data, a.out, b, a.examples) for b in ("pad", "balance")]
    ray.shutdown()
    for r in results:
        print(json.dumps(r))
    (a.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
