"""Selecting 1,000 rows from a 59K-row scored pool (target: under 1 s per selection).

    .venv/bin/python tests/benchmarks/bench_selection.py [--out /tmp/bench_selection] [--rows 59029]

The pool is synthetic with the shape of s1's 59K pool (61 MSC domains with a skewed size
distribution, log-normal trace lengths, AIME/GPQA/MATH sources). The baseline is a plain
``DataFrame.sample`` of 1,000 rows in the same process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from s1ray.curate.selection import CRITERIA, select_subset


def synthetic_pool(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = [f"{c:02d}" for c in range(0, 98)][:61]
    weights = rng.zipf(1.6, size=len(codes)).astype(float)
    domain = rng.choice(codes, size=n, p=weights / weights.sum())
    source = rng.choice(["qfq/openaimath/Algebra", "qq8933/AIME_1983_2024", "Idavidrein/gpqa", "AI-MO/NuminaMath-CoT",
                         "olympiads", "gsm8k"], size=n, p=[0.2, 0.02, 0.01, 0.5, 0.17, 0.1])
    return pd.DataFrame({
        "id": [f"{i:016x}" for i in range(n)],
        "question": ["q"] * n,
        "source_type": source,
        "attempt_correct": rng.random(n) < 0.6,
        "domain": domain,
        "thinking_tokens": rng.lognormal(7.5, 0.8, size=n).astype(np.int64),
        "solver_failures": rng.integers(0, 3, size=n),
    })


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/bench_selection")
    ap.add_argument("--rows", type=int, default=59_029)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    pool = synthetic_pool(args.rows)
    results = {}
    base = timed(lambda: pool.sample(args.size, random_state=0), args.repeats)
    results["baseline_df_sample"] = statistics.median(base)
    for crit in CRITERIA:
        results[crit] = statistics.median(timed(lambda: select_subset(pool, crit, args.size, seed=1), args.repeats))
    print(f"pool {args.rows} rows, select {args.size}, median of {args.repeats} (shared, noisy machine)")
    print(f"{'criterion':<22}{'seconds':>10}{'x baseline':>12}")
    for k, v in results.items():
        print(f"{k:<22}{v:>10.4f}{v / results['baseline_df_sample']:>12.1f}")
    ok = results["s1"] < 1.0
    print(f"target s1 < 1 s: {'PASS' if ok else 'FAIL'}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_selection.json").write_text(json.dumps(
        {"rows": args.rows, "size": args.size, "median_seconds": results, "target_s1_under_1s": ok}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(list(results), list(results.values()))
    ax.axhline(1.0, color="red", ls="--", label="target 1 s")
    ax.set_ylabel("seconds (median)")
    ax.set_title(f"select {args.size} of {args.rows}")
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(out / "bench_selection.png", dpi=100)
    print(f"wrote {out}/bench_selection.json and .png")


if __name__ == "__main__":
    main()
