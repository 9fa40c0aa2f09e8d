"""Planner validation on CPU: predicted vs measured peak memory per worker, small Llama models.

    PYTHONPATH=. RAY_TMPDIR=/tmp/ray-bench nice .venv/bin/python tests/benchmarks/bench_plan_memory.py --out /tmp/bench_plan

Each row is one short Ray Train + DeepSpeed run (2 optimizer steps) of a Llama built from a
config (the ``--model`` shape, ~49M params with the SmolLM2 vocabulary) on rows of exactly
``block_size`` tokens (every example is longer and truncated). Measured: each worker's peak
resident set (VmHWM) while training minus its resident set before the model is built
(:class:`s1ray.train.hooks.PeakMemory`, which also makes glibc return freed tensors to the
OS); the table shows the largest rank. Predicted: the planner's largest phase for the same
config on ``cpu`` (live tensors; no process baseline). Memory, not time: load does not matter.
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
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

SHAPES = {  # Llama shapes built from a config; vocabulary: the SmolLM2 tokenizer (49,152)
    "49m": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                num_key_value_heads=4),
    "24m": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
                num_key_value_heads=2),
}
# (block_size, zero_stage, workers, gradient_checkpointing, dtype)
GRID = [(512, 0, 1, False, "float32"), (1024, 0, 1, False, "float32"), (2048, 0, 1, False, "float32"),
        (2048, 0, 1, True, "float32"),
        (512, 2, 1, False, "float32"), (2048, 2, 1, False, "float32"),
        (512, 2, 2, False, "float32"), (1024, 2, 2, False, "float32"), (1024, 2, 2, True, "float32"),
        (512, 3, 2, False, "float32"), (1024, 3, 2, False, "float32"), (1024, 3, 2, True, "float32"),
        (1024, 2, 2, False, "bfloat16"), (1024, 3, 2, False, "bfloat16")]


def save_model(folder: Path, shape: str) -> Path:
    """A randomly initialised Llama of ``shape`` with the tiny models' tokenizer, as an HF folder."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from s1ray.models.loading import load_tokenizer

    tok = load_tokenizer("tiny:tiny")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), max_position_embeddings=8192,
                                         tie_word_embeddings=True, **SHAPES[shape]))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def long_rows(path: Path, n: int, words: int) -> Path:
    """s1K-shaped rows whose traces are far longer than any block size here (so rows are block_size long)."""
    rows = []
    for i in range(n):
        body = " ".join(f"Step {k}: {i} plus {k} is {i + k}." for k in range(words // 6))
        rows.append({"question": f"Add up to {i}.", "thinking_trajectories": [body], "attempt": "Done.",
                     "solution": "x"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_config(model: Path, data: Path, out: Path, block: int, stage: int, workers: int, ckpt: bool, dtype: str):
    from s1ray.train.config import TrainConfig

    return TrainConfig.model_validate({
        "data": {"name": "long", "path": str(data), "preset": "s1k"}, "model": str(model), "dtype": dtype,
        "epochs": 1, "global_batch_size": workers, "micro_batch_size": 1, "num_workers": workers,
        "cpus_per_worker": 2 / workers, "torch_threads": 1, "block_size": block, "batching": "pad",
        "loss_reduction": "example_mean", "gradient_checkpointing": ckpt,
        "deepspeed": {"zero_stage": stage or 2, "zero_with_one_worker": stage > 0}, "storage_path": str(out / "runs"),
        "checkpoint_every_steps": 10**6, "metrics_every_steps": 10**6, "max_failures": 0,
        "logging": {"tensorboard": False, "progress_bar": False}})


def measure(cfg, out: Path, name: str) -> int:
    """The largest rank's peak resident bytes while training, over its resident bytes before the model."""
    from s1ray.train.hooks import PeakMemory
    from s1ray.train.trainer import build_trainer

    folder = out / f"peak-{name}"
    result = build_trainer(cfg, run_name=name, hooks=[PeakMemory(str(folder), step=2)], export=False).fit()
    if result.error:
        raise result.error
    return max(json.loads(f.read_text())["peak_bytes"] for f in folder.glob("rank*.json"))


def predict(cfg) -> tuple[int, str]:
    from s1ray.plan import hardware, plan_train

    p = plan_train(cfg, hardware("cpu", cfg.num_workers))
    return max(p.memory.phases.values()), p.memory.peak_phase


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/bench_plan")
    ap.add_argument("--model", default="49m", choices=list(SHAPES))
    ap.add_argument("--only", type=int, nargs="*", help="row numbers of the grid to run (default: all)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from s1ray.cluster import init_ray
    from s1ray.config import RayConfig

    init_ray(RayConfig(num_cpus=2))
    model = save_model(out / f"model-{args.model}", args.model)
    data = long_rows(out / "long.jsonl", 4, 3000)
    rows = []
    print(f"model {args.model}; uptime: {os.popen('uptime').read().strip()}")
    print(f"{'block':>6} {'ZeRO':>4} {'workers':>7} {'ckpt':>4} {'dtype':>8} {'predicted MiB':>13} {'measured MiB':>12} "
          f"{'ratio':>6}  phase")
    for i, (block, stage, workers, ckpt, dtype) in enumerate(GRID):
        if args.only and i not in args.only:
            continue
        cfg = train_config(model, data, out, block, stage, workers, ckpt, dtype)
        predicted, phase = predict(cfg)
        measured = measure(cfg, out, f"r{i}-{int(time.time())}")
        row = dict(block=block, zero=stage, workers=workers, ckpt=ckpt, dtype=dtype, predicted=predicted,
                   measured=measured, ratio=round(predicted / measured, 3), phase=phase)
        rows.append(row)
        print(f"{block:>6} {stage:>4} {workers:>7} {str(ckpt)[0]:>4} {dtype:>8} {predicted / 2**20:>13.0f} "
              f"{measured / 2**20:>12.0f} {predicted / measured:>6.2f}  {phase}", flush=True)
    (out / "plan_memory.json").write_text(json.dumps(rows, indent=2))
    bad = [r for r in rows if not 0.75 <= r["ratio"] <= 1.25]
    print(f"{len(rows) - len(bad)}/{len(rows)} within +-25%")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
