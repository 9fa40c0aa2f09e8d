"""Actor-pool scoring (Ray Data) vs calling the same model directly in one process.

    .venv/bin/python tests/benchmarks/bench_scoring.py [--out /tmp/bench_scoring] [--rows 64]
        [--model packaged:smollm2-135m-instruct] [--max-new-tokens 32] [--batch-size 8]

The stage is a solver (:class:`s1ray.curate.difficulty.SolverAttempts`: generate + grade) over
the same synthetic arithmetic questions. Baseline: the same class called in this process with
1 torch thread (what one actor with 1 CPU gets); also shown with 2 threads. Pool runs: Ray
Data with 1 and 2 actors on a 2-CPU local Ray. Times include model loading in both paths
(an actor must load its model too) and are also given without it ("steady": total minus the
measured load time). Targets: 1 actor < 10% overhead over direct; 2 actors >= 1.6x 1 actor.
The machine is shared with other jobs: figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def questions(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    a, b = rng.integers(10, 99, size=n), rng.integers(10, 99, size=n)
    return pd.DataFrame({"id": [f"q{i}" for i in range(n)],
                         "question": [f"What is {x} + {y}?" for x, y in zip(a, b)],
                         "answer": [str(x + y) for x, y in zip(a, b)]})


def direct(df: pd.DataFrame, solver, threads: int, batch: int) -> tuple[float, float, pd.DataFrame]:
    import torch

    from s1ray.curate.difficulty import SolverAttempts

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    stage = SolverAttempts(solver)
    load = time.perf_counter() - t0
    parts = [stage(df.iloc[i:i + batch].reset_index(drop=True)) for i in range(0, len(df), batch)]
    total = time.perf_counter() - t0
    return total, load, pd.concat(parts, ignore_index=True)


def pooled(df: pd.DataFrame, solver, actors: int) -> tuple[float, pd.DataFrame]:
    import ray

    from s1ray.curate.scoring import ScoringConfig, score_dataset

    solver = solver.model_copy(update={"generation": solver.generation.model_copy(
        update={"concurrency": actors, "num_cpus": 1.0})})
    cfg = ScoringConfig.model_validate({"lengths": {"enabled": False}, "domains": {"enabled": False},
                                        "difficulty": {"solvers": [solver.model_dump()]}})
    ds = ray.data.from_pandas(df).repartition(max(2, len(df) // solver.generation.batch_size))
    t0 = time.perf_counter()
    out = score_dataset(ds, cfg).to_pandas()
    return time.perf_counter() - t0, out.sort_values("id").reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/bench_scoring")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--model", default="packaged:smollm2-135m-instruct")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    from s1ray.cluster import init_ray
    from s1ray.config import RayConfig
    from s1ray.curate.difficulty import SolverConfig
    from s1ray.models.generation import GenerationConfig

    df = questions(args.rows)
    solver = SolverConfig(name="bench", generation=GenerationConfig(
        model=args.model, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size))
    d1, load1, ref = direct(df, solver, threads=1, batch=args.batch_size)
    d2, load2, _ = direct(df, solver, threads=2, batch=args.batch_size)
    init_ray(RayConfig(num_cpus=2))
    p1, out1 = pooled(df, solver, actors=1)
    p2, out2 = pooled(df, solver, actors=2)
    ref = ref.sort_values("id").reset_index(drop=True)
    same = all((o["solver_bench_extracted"].fillna("") == ref["solver_bench_extracted"].fillna("")).all()
               for o in (out1, out2))
    load = load1  # an actor loads the model like the direct path does
    rows = {
        "direct, 1 thread": (d1, d1 - load1),
        "direct, 2 threads": (d2, d2 - load2),
        "actor pool, 1 actor": (p1, p1 - load),
        "actor pool, 2 actors": (p2, p2 - load),
    }
    overhead = p1 / d1 - 1.0
    overhead_steady = (p1 - load) / (d1 - load1) - 1.0
    speedup = p1 / p2
    print(f"{args.rows} rows, {args.model}, max_new_tokens={args.max_new_tokens}, batch {args.batch_size} "
          "(shared, noisy machine)")
    print(f"{'path':<24}{'total s':>9}{'steady s':>10}{'rows/s':>9}")
    for k, (t, s) in rows.items():
        print(f"{k:<24}{t:>9.1f}{s:>10.1f}{args.rows / t:>9.2f}")
    print(f"1-actor overhead vs direct (1 thread): {overhead:+.1%} total, {overhead_steady:+.1%} steady "
          f"(target < 10%): {'PASS' if overhead < 0.10 else 'FAIL'}")
    print(f"2 actors vs 1: {speedup:.2f}x (target >= 1.6x): {'PASS' if speedup >= 1.6 else 'FAIL'}")
    print(f"same answers in every path: {same}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_scoring.json").write_text(json.dumps({
        "args": vars(args), "seconds": {k: {"total": t, "steady": s} for k, (t, s) in rows.items()},
        "model_load_s": load1, "overhead_1_actor": overhead, "overhead_1_actor_steady": overhead_steady,
        "speedup_2_vs_1": speedup, "same_answers": bool(same)}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(list(rows), [args.rows / t for t, _ in rows.values()])
    ax.set_xlabel("rows / s (incl. model load)")
    ax.set_title(f"solver scoring, {args.rows} rows")
    fig.tight_layout()
    fig.savefig(out / "bench_scoring.png", dpi=100)
    print(f"wrote {out}/bench_scoring.json and .png")


if __name__ == "__main__":
    main()
