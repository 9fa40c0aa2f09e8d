"""Training benchmark: Ray Train + DeepSpeed vs a plain PyTorch loop, padding, ZeRO memory.

    .venv/bin/python tests/benchmarks/bench_train.py --out /tmp/bench_train

1. Throughput: the same model and the very same batches (the trainer's own rows and batch
   plan, schedule and AdamW; tests/train/plain_loop.py) through (a) a plain single-process
   PyTorch loop with 2 threads, (b) Ray Train + DeepSpeed with 1 worker (2 threads; one float32
   worker runs the engine without ZeRO), (c) ZeRO-2 with 2 workers (1 thread each). Tokens/s
   is measured from step 2 to the last step (the first step pays one-off allocations); the
   losses of every path are compared step by step.
2. Non-padding fraction with naive padding, length grouping and packing, on the token
   lengths of a real question set (MATH solutions, ../shared/data) or, when that is
   absent, a log-normal stand-in.
3. Per-rank bytes of live tensors (parameters + gradients + optimizer state) after the
   backward pass of step 2, under ZeRO-2 and ZeRO-3 with 2 workers, against one process
   holding everything (the plain loop, measured the same way).
The machine is shared and noisy: rerun when it is quiet and compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "s1ray" / "torch_extensions"))
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def make_records(path: Path, n: int) -> Path:
    """s1K-shaped rows from MATH (worked solution as the trace), or synthetic text without it."""
    rows = []
    src = SHARED / "pool" / "math_test.jsonl"
    if src.exists():
        for line in src.read_text().splitlines()[:n]:
            r = json.loads(line)
            rows.append({"question": r["problem"], "thinking_trajectories": [r["solution"]],
                         "attempt": r["solution"][-200:], "solution": r["solution"]})
    else:
        for i in range(n):
            body = " ".join(f"Step {k}: {i} times {k} is {i * k}." for k in range(20 + i % 40))
            rows.append({"question": f"Compute the table of {i}.", "thinking_trajectories": [body],
                         "attempt": f"Done {i}.", "solution": "x"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_config(data: Path, out: Path, model: str, seq: int, steps_rows: int, workers: int, stage: int, **kw):
    from s1ray.train.config import TrainConfig

    return TrainConfig.model_validate({
        "data": {"name": "bench", "path": str(data), "preset": "s1k"}, "model": model, "dtype": "float32",
        "epochs": 1, "lr": 1e-5, "global_batch_size": steps_rows, "micro_batch_size": 1, "num_workers": workers,
        "cpus_per_worker": 2 / workers, "torch_threads": max(1, 2 // workers), "block_size": seq,
        "batching": "pack", "deepspeed": {"zero_stage": stage}, "storage_path": str(out / "runs"),
        "checkpoint_every_steps": 10**6, "metrics_every_steps": 10**6, "max_failures": 0,
        "logging": {"tensorboard": False, "progress_bar": False}, **kw})


def ray_run(cfg, name: str, out: Path, measure_memory: bool = False) -> dict:
    from s1ray.train.hooks import StepTrace
    from s1ray.train.trainer import build_trainer

    trace = out / f"trace-{name}"
    hook = StepTrace(str(trace), measure_memory_at_step=2 if measure_memory else None)
    build_trainer(cfg, run_name=f"{name}-{int(time.time())}", hooks=[hook]).fit()
    recs = [json.loads(line) for f in sorted(trace.glob("rank*.jsonl")) for line in f.read_text().splitlines()]
    return summarize(recs)


def summarize(recs: list[dict]) -> dict:
    steps = sorted({r["step"] for r in recs})
    t = {s: max(r["time"] for r in recs if r["step"] == s) for s in steps}
    tokens = sum(r["tokens"] for r in recs if r["step"] > steps[0])
    return {"steps": len(steps), "tokens_per_s": tokens / (t[steps[-1]] - t[steps[0]]),
            "losses": [next(r["loss"] for r in recs if r["step"] == s and r["rank"] == 0) for s in steps],
            "tensor_bytes_per_rank": sorted(r["tensor_bytes"] for r in recs if "tensor_bytes" in r)}


def plain_run(cfg, measure_memory: bool = False) -> dict:
    """Single process, no Ray, no DeepSpeed: the same rows, plan, loss, AdamW, clipping and schedule."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    from plain_loop import plain_run as run

    out = summarize(run(cfg, threads=2, measure_memory_at_step=2 if measure_memory else None))
    return out


def padding_figures(model: str) -> dict:
    import numpy as np

    from s1ray.io.readers import SourceConfig, read_source
    from s1ray.models.loading import load_tokenizer
    from s1ray.train.config import DelimiterConfig
    from s1ray.train.data import build_examples, epoch_plan, non_padding_fraction, pack_bins

    src = SHARED / "pool" / "math_test.jsonl"
    if src.exists():
        recs = read_source(SourceConfig(name="math", path=str(src), preset="math",
                                        columns={"thinking": "solution"})).records
        examples, _ = build_examples(recs, load_tokenizer(model), DelimiterConfig(answer_field="answer"), 4096)
        lengths, origin = [len(e["input_ids"]) for e in examples], f"MATH test, {len(examples)} examples, SmolLM2 tokens"
    else:
        rng = np.random.default_rng(0)
        lengths, origin = [int(x) for x in rng.lognormal(6, 0.8, 5000).clip(16, 4096)], "log-normal stand-in"
    out = {"lengths": origin, "median_length": int(np.median(lengths)), "max_length": max(lengths)}
    for micro in (4, 8):
        per_step = 16 // micro
        out[f"micro{micro}_pad"] = non_padding_fraction(lengths, epoch_plan(lengths, "pad", micro, per_step, 0, 0))
        out[f"micro{micro}_group"] = non_padding_fraction(lengths, epoch_plan(lengths, "group", micro, per_step, 0, 0))
        for block in (2048, 4096):
            bins = pack_bins(lengths, block)
            packed = [sum(lengths[i] for i in b) for b in bins]
            out[f"micro{micro}_pack{block}"] = non_padding_fraction(packed, epoch_plan(packed, "pack", micro,
                                                                                       per_step, 0, 0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/bench_train")
    ap.add_argument("--model", default="packaged:smollm2-135m-instruct")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--rows-per-step", type=int, default=4)
    ap.add_argument("--examples", type=int, default=24)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: speed,padding,memory")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from s1ray.cluster import init_ray
    from s1ray.config import RayConfig

    results: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}, "args": vars(args)}
    data = make_records(out / "bench.jsonl", args.examples)
    if "padding" not in skip:
        results["padding"] = padding_figures(args.model)
        print(json.dumps(results["padding"], indent=1), flush=True)
    if "speed" not in skip:
        cfg1 = train_config(data, out, args.model, args.seq, args.rows_per_step, 1, 2)
        results["plain"] = plain_run(cfg1)
        print("plain", results["plain"], flush=True)
        init_ray(RayConfig(num_cpus=2))
        results["ray_1w"] = ray_run(cfg1, "speed-1w", out)
        print("ray 1 worker", results["ray_1w"], flush=True)
        cfg2 = train_config(data, out, args.model, args.seq, args.rows_per_step, 2, 2)
        results["ray_2w"] = ray_run(cfg2, "speed-2w", out)
        print("ray 2 workers", results["ray_2w"], flush=True)
        base = results["plain"]["tokens_per_s"]
        results["speed_ratio_1w"] = results["ray_1w"]["tokens_per_s"] / base
        results["speed_ratio_2w"] = results["ray_2w"]["tokens_per_s"] / base
    if "memory" not in skip:
        mem_data = make_records(out / "bench_mem.jsonl", 12)
        cfg_m = {s: train_config(mem_data, out, args.model, 128, 4, 2, s) for s in (2, 3)}
        results["mem_plain"] = plain_run(train_config(mem_data, out, args.model, 128, 4, 1, 2), measure_memory=True)
        init_ray(RayConfig(num_cpus=2))
        # one DeepSpeed rank holding everything (fp32 master copy included), for the second baseline
        one_rank = train_config(mem_data, out, args.model, 128, 4, 1, 2,
                                deepspeed={"zero_stage": 2, "zero_with_one_worker": True})
        results["mem_ds_1rank"] = ray_run(one_rank, "mem-1rank", out, measure_memory=True)
        for s in (2, 3):
            results[f"mem_zero{s}"] = ray_run(cfg_m[s], f"mem-zero{s}", out, measure_memory=True)
            print(f"zero{s}", results[f"mem_zero{s}"]["tensor_bytes_per_rank"], flush=True)
        base = results["mem_plain"]["tensor_bytes_per_rank"][0]
        for s in (2, 3):
            worst = max(results[f"mem_zero{s}"]["tensor_bytes_per_rank"])
            results[f"mem_ratio_zero{s}"] = worst / base
            results[f"mem_ratio_zero{s}_vs_ds_1rank"] = worst / results["mem_ds_1rank"]["tensor_bytes_per_rank"][0]
    results["machine"]["load_avg_end"] = os.getloadavg()
    (out / "bench_train.json").write_text(json.dumps(results, indent=2))
    table(results, out)
    return 0


def table(r: dict, out: Path) -> None:
    print("\n== bench_train (shared, noisy 2-CPU machine; load avg", r["machine"]["load_avg_start"], ") ==")
    if "plain" in r:
        print(f"{'path':28s} {'tokens/s':>9s} {'x plain':>8s}")
        for k, label in (("plain", "plain PyTorch (2 threads)"), ("ray_1w", "Ray+DS, 1 worker (no ZeRO)"),
                         ("ray_2w", "Ray+DS ZeRO-2, 2 workers")):
            print(f"{label:28s} {r[k]['tokens_per_s']:9.1f} {r[k]['tokens_per_s'] / r['plain']['tokens_per_s']:8.2f}")
        for k in ("ray_1w", "ray_2w"):
            diff = max(abs(a - b) / abs(b) for a, b in zip(r[k]["losses"], r["plain"]["losses"]))
            print(f"{k}: max relative loss difference vs plain over {len(r['plain']['losses'])} steps: {diff:.1e}")
        print(f"SUMMARY ratio 1 worker {r['speed_ratio_1w']:.2f}x, 2 workers {r['speed_ratio_2w']:.2f}x "
              f"(target >= 0.85x at 1 worker); load avg start {r['machine']['load_avg_start'][0]:.1f}, "
              f"end {r['machine']['load_avg_end'][0]:.1f}")
    if "padding" in r:
        print("non-padding fraction:", {k: round(v, 3) for k, v in r["padding"].items() if isinstance(v, float)})
    if "mem_plain" in r:
        gib = 2**30
        print(f"tensor GiB/rank: plain {r['mem_plain']['tensor_bytes_per_rank'][0] / gib:.2f}  "
              f"ZeRO-2 {[round(b / gib, 2) for b in r['mem_zero2']['tensor_bytes_per_rank']]}  "
              f"ZeRO-3 {[round(b / gib, 2) for b in r['mem_zero3']['tensor_bytes_per_rank']]}  "
              f"DS 1 rank {r['mem_ds_1rank']['tensor_bytes_per_rank'][0] / gib:.2f}")
        print(f"ZeRO-2 / ZeRO-3 per rank vs plain process: {r['mem_ratio_zero2']:.2f} / {r['mem_ratio_zero3']:.2f}; "
              f"vs one DeepSpeed rank: {r['mem_ratio_zero2_vs_ds_1rank']:.2f} / {r['mem_ratio_zero3_vs_ds_1rank']:.2f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        if "plain" in r:
            keys = ["plain", "ray_1w", "ray_2w"]
            axes[0].bar(["plain", "Ray 1w", "Ray 2w"], [r[k]["tokens_per_s"] for k in keys])
            axes[0].set_ylabel("tokens/s")
            axes[0].set_title("SFT throughput (same batches)")
        if "mem_plain" in r:
            vals = [r["mem_plain"]["tensor_bytes_per_rank"][0], max(r["mem_zero2"]["tensor_bytes_per_rank"]),
                    max(r["mem_zero3"]["tensor_bytes_per_rank"])]
            axes[1].bar(["1 process", "ZeRO-2 /rank", "ZeRO-3 /rank"], [v / 2**30 for v in vals])
            axes[1].set_ylabel("GiB of live tensors")
            axes[1].set_title("params + grads + optimizer state")
        fig.tight_layout()
        fig.savefig(out / "bench_train.png", dpi=100)
    except Exception as e:  # plotting must not lose the figures
        print("plot failed:", e)


if __name__ == "__main__":
    sys.exit(main())
