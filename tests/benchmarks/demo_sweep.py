"""Demonstration: does the choice of subset matter? A sweep with a real small model on a real pool.

Model: SmolLM2-135M-Instruct (packaged, offline). Pool (scored once, here, before the sweep;
equal thirds by default):
- ``chain_sum`` questions from reasoning-gym (procedural, verifiable), with step-by-step traces
  written from their expressions ("57 + 87 = 144. 144 + 70 = 214.");
- ``basic_arithmetic`` from reasoning-gym (parentheses, negatives), one-line traces;
- GSM8K training problems (../shared/data/pool/gsm8k_train.jsonl) with their human worked
  solutions as traces: long, and a different skill.
Evaluation: held-out chain_sum questions (another seed, none in the pool), budget forcing.
So "longest" fills the subset with GSM8K (long traces, little chain-sum practice), while
"s1" balances the three families (domains) and "random" follows the pool's mix. The untrained
model is evaluated too, so the table says what training on each subset did.

    .venv/bin/python tests/benchmarks/demo_sweep.py --out /tmp/demo_sweep [--quick]

Writes the sweep's trials.csv, smallest_effective_set.{json,md,png}, demo.json and demo.md
(the table with each subset's family mix) to --out. Takes about 30 minutes on a quiet 2-CPU
machine (not part of the test run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
MODEL = "packaged:smollm2-135m-instruct"


def _chain_trace(expression: str) -> str:
    """Left-to-right partial sums of a chain like '57 + 87 - 70'."""
    tokens = expression.split()
    total = int(tokens[0])
    steps = []
    for op, num in zip(tokens[1::2], tokens[2::2]):
        new = total + int(num) if op == "+" else total - int(num)
        steps.append(f"{total} {op} {num} = {new}.")
        total = new
    return " ".join(steps) + f" So the result is {total}."


# Short chains of 1-2 digit numbers: within reach of a 135M model, so training can move the score.
CHAIN = {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2}


def _gym(task: str, n: int, seed: int, **options) -> list[dict]:
    import reasoning_gym

    out = []
    for e in reasoning_gym.create_dataset(task, size=n, seed=seed, **options):
        expr = e["metadata"]["expression"]
        trace = _chain_trace(expr) if task == "chain_sum" else f"{expr} = {e['answer']}."
        out.append({"question": e["question"], "answer": str(e["answer"]), "thinking": trace, "family": task})
    return out


def _gsm8k(n: int) -> list[dict]:
    path = SHARED / "pool" / "gsm8k_train.jsonl"
    rows = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            sol, ans = r["answer"].rsplit("####", 1)
            rows.append({"question": r["question"], "answer": ans.strip().replace(",", ""),
                         "thinking": re.sub(r"<<[^>]*>>", "", sol).strip(), "family": "gsm8k"})
            if len(rows) >= n:
                break
    return rows


def build_pool(n_chain: int = 24, n_arith: int = 24, n_gsm8k: int = 24, seed: int = 0) -> pd.DataFrame:
    """The scored pool: canonical columns + thinking_tokens (SmolLM2 tokenizer) + domain = family."""
    from s1ray.models.loading import load_tokenizer
    from s1ray.records import question_id

    tok = load_tokenizer(MODEL)
    rows = _gym("chain_sum", n_chain, seed, **CHAIN) + _gym("basic_arithmetic", n_arith, seed + 1) + _gsm8k(n_gsm8k)
    lengths = [len(x) for x in tok([r["thinking"] for r in rows], add_special_tokens=False)["input_ids"]]
    pool = pd.DataFrame([{
        "id": question_id(r["question"]), "source": r["family"], "source_type": r["family"], "origin": f"demo:{i}",
        "question": r["question"], "solution": r["answer"], "answer": r["answer"], "choices": None,
        "cot_type": "math", "thinking": [r["thinking"]], "attempt": f"\\boxed{{{r['answer']}}}",
        "attempt_correct": True, "domain": r["family"], "metadata": "{}", "thinking_tokens": n,
    } for i, (r, n) in enumerate(zip(rows, lengths))])
    return pool.drop_duplicates("id").reset_index(drop=True)


def build_eval(path: Path, n: int, pool: pd.DataFrame, seed: int = 1000) -> Path:
    """Held-out chain_sum questions (a different seed), none of which is in the pool."""
    seen = set(pool["question"])
    rows = [r for r in _gym("chain_sum", 3 * n, seed, **CHAIN) if r["question"] not in seen][:n]
    path.write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in rows))
    return path


def evaluate_config(eval_path: Path) -> dict:
    return {"benchmarks": [{"name": "jsonl", "path": str(eval_path), "label": "chain_sum_heldout"}],
            "budgets": [48], "generation": {"batch_size": 16},
            "budget_forcing": {"max_answer_tokens": 16}, "bootstrap_samples": 200, "progress": False}


def sweep_config(out: Path, pool_path: Path, eval_path: Path, name: str, quick: bool, epochs: int = 2,
                 lr: float = 1e-4) -> dict:
    return {
        "name": name, "pool": str(pool_path), "storage_path": str(out / "sweeps"), "resume": True,
        "space": {"sizes": [8, 24] if quick else [8, 24, "full"],
                  "criteria": ["s1", "longest"] if quick else ["s1", "random", "longest"],
                  "seeds": [0] if quick else [0, 1]},
        "analysis": {"epsilon": 0.05, "epsilon_mode": "absolute", "reference": "full"},
        "max_failures": 1,
        "train": {"model": MODEL, "epochs": epochs, "lr": lr, "global_batch_size": 4, "block_size": 512,
                  "dtype": "float32", "num_workers": 1, "checkpoint_every_steps": 10_000,
                  "metrics_every_steps": 10_000, "logging": {"tensorboard": False, "progress_bar": False}},
        "evaluate": evaluate_config(eval_path),
    }


def untrained_score(out: Path, eval_path: Path) -> float:
    """The packaged model before any training, on the same questions and budget."""
    from s1ray.evaluate.config import EvaluateConfig
    from s1ray.evaluate.runner import run_evaluate

    raw = evaluate_config(eval_path)
    raw["generation"]["model"] = MODEL
    raw["output_dir"] = str(out / "untrained_eval")
    summary = run_evaluate(EvaluateConfig.model_validate(raw))["summary"]
    from s1ray.evaluate.metrics import score_from_summary

    return score_from_summary(summary, "accuracy")


def family_mix(sweep: Path, table: pd.DataFrame) -> pd.Series:
    """Share of chain_sum rows in each trial's subset (the skill the evaluation asks for)."""
    shares = {}
    for tid in table["trial_id"]:
        path = sweep / "trials" / str(tid) / "subset.parquet"
        if path.exists():
            st = pd.read_parquet(path, columns=["source_type"])["source_type"]
            shares[tid] = float((st == "chain_sum").mean())
    return table["trial_id"].map(shares)


def markdown(table: pd.DataFrame) -> str:
    rows = [list(table.columns)] + table.astype(str).values.tolist()
    return "\n".join("| " + " | ".join(map(str, r)) + " |" for r in rows[:1] + [["---"] * len(rows[0])] + rows[1:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="/tmp/demo_sweep")
    p.add_argument("--quick", action="store_true", help="2x2 sweep, one seed (a smoke run)")
    p.add_argument("--eval-questions", type=int, default=40)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-concurrent", type=int, default=None, help="cap concurrent trials (memory)")
    p.add_argument("--sizes", default=None, help="comma-separated subset sizes (ints or 'full'), overriding the space")
    p.add_argument("--criteria", default=None, help="comma-separated criteria, overriding the space")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, overriding the space")
    p.add_argument("--name", default=None, help="sweep name (a new name starts a new sweep)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from s1ray.cluster import init_ray
    from s1ray.config import RayConfig
    from s1ray.sweep.config import SweepConfig
    from s1ray.sweep.driver import run_sweep

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pool = build_pool()
    pool_path = out / "scored_pool.parquet"
    pool.to_parquet(pool_path)
    eval_path = build_eval(out / "chain_sum_heldout.jsonl", args.eval_questions, pool)
    print(f"pool: {len(pool)} rows {pool['domain'].value_counts().to_dict()}, eval: {args.eval_questions} questions")
    raw = sweep_config(out, pool_path, eval_path, "demo_quick" if args.quick else "demo", args.quick, args.epochs,
                       args.lr)
    raw["max_concurrent_trials"] = args.max_concurrent
    if args.name:
        raw["name"] = args.name
    for key, conv in (("sizes", lambda v: v if v == "full" else int(v)), ("criteria", str), ("seeds", int)):
        if getattr(args, key):
            raw["space"][key] = [conv(v) for v in getattr(args, key).split(",")]
    cfg = SweepConfig.model_validate(raw)
    init_ray(RayConfig(include_dashboard=True))  # as run_sweep would: Ray Train's clean-up uses the State API
    base = untrained_score(out, eval_path)
    summary = run_sweep(cfg)
    summary["untrained_score"] = base
    summary["demo_wall_s"] = round(time.perf_counter() - t0, 1)
    table = pd.read_csv(summary["trials_csv"])
    table["chain_sum_share"] = family_mix(Path(summary["sweep_dir"]), table)
    cols = ["criterion", "size", "seed", "n_rows", "chain_sum_share", "status", "score", "t_trial_s"]
    table = table.sort_values(["size", "criterion", "seed"], key=lambda c: c.astype(str))[cols]
    md = (f"# Sweep demo\n\nUntrained model: **{base:.3f}** on {args.eval_questions} held-out chain-sum questions. "
          f"Wall time {summary['demo_wall_s']:.0f} s.\n\n" + markdown(table.round(3)) + "\n")
    if "paths" in summary:
        md += "\n## Against the full-pool trial (the sweep's configured reference)\n\n"
        md += Path(summary["paths"]["markdown"]).read_text().split("\n", 1)[1]
        # The same trials against the best trial instead: when more data does not help, "within
        # epsilon of the full pool" holds for everything and says little.
        from s1ray.sweep.analysis import smallest_effective_set, write_report

        full_table = pd.read_csv(summary["trials_csv"])
        vs_best = smallest_effective_set(full_table, cfg.analysis.epsilon, cfg.analysis.epsilon_mode, "best",
                                         cfg.metric_mode)
        paths = write_report(vs_best, out / "report_vs_best", cfg.metric)
        summary["vs_best"] = {"smallest_effective_set": vs_best["smallest"], "reference": vs_best["reference"],
                              "paths": paths}
        md += "\n## Against the best trial\n\n" + Path(paths["markdown"]).read_text().split("\n", 1)[1]
    (out / "demo.md").write_text(md)
    (out / "demo.json").write_text(json.dumps(summary, indent=2, default=str))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
