"""GPU benchmark: peak memory and time of the loss step at s1's length, and of one Qwen2.5-32B layer.

    python tests/gpu/bench_loss_memory.py --out /tmp/bench_loss.json        # one H100/H200
    python tests/gpu/bench_loss_memory.py --cpu-smoke                       # toy sizes, CPU, ~seconds

Needs torch, transformers and (for the Liger row) liger-kernel; nothing else of s1ray's stack
(it imports s1ray.train.loss, which imports only torch). Not a pytest test (no test_ prefix).

1. The loss step alone (forward + backward from the last hidden states and the output embedding,
   s1's example_mean, bf16 weights, a 1/16 prompt masked): ``full`` (bf16 logits -> fp32 ->
   cross entropy, s1ray's ``loss_impl: full``), ``chunked`` (``loss_chunk_tokens`` rows at a
   time) and ``liger`` (Liger-Kernel's fused linear cross entropy, reduction="none") at 32,768
   tokens x 152,064 vocab x hidden 5,120 (Qwen2.5-32B's head). ``full`` is also run at 4,096 and
   8,192 tokens, where it fits, to give bytes per (token, vocab entry). Peak = the growth of
   ``torch.cuda.max_memory_allocated`` over what was allocated before the step.
2. One Qwen2.5-32B decoder layer (hidden 5,120, MLP 27,648, 40 heads, 8 KV heads; built from a
   config, bf16, sdpa attention = flash on H100) at 32,768 tokens: forward under non-reentrant
   activation checkpointing + backward, as the trainer runs each of the 64 layers.
Prints a markdown table and writes the rows as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's s1ray

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from s1ray.train.loss import IGNORE, hidden_states_loss, lm_loss  # noqa: E402

FULL = dict(tokens=32768, vocab=152064, hidden=5120, chunk=1024, intermediate=27648, heads=40, kv_heads=8)
SMOKE = dict(tokens=256, vocab=1024, hidden=64, chunk=64, intermediate=128, heads=4, kv_heads=2)


class Device:
    """Peak-memory and timing probes for CUDA (allocator statistics) or CPU (smoke: no memory figure)."""

    def __init__(self, cpu: bool):
        self.dev = torch.device("cpu" if cpu else "cuda")

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def start(self) -> int:
        self.sync()
        if self.dev.type != "cuda":
            return 0
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()

    def peak_since(self, base: int) -> int | None:
        self.sync()
        return torch.cuda.max_memory_allocated() - base if self.dev.type == "cuda" else None


def loss_inputs(tokens: int, vocab: int, hidden: int, dev: torch.device, dtype: torch.dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    h = (torch.randn(1, tokens, hidden, generator=g) * 1.0).to(dev, dtype).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g) * hidden ** -0.5).to(dev, dtype).requires_grad_()
    labels = torch.randint(0, vocab, (1, tokens), generator=g)
    labels[0, :tokens // 16] = IGNORE
    return h, w, labels.to(dev), torch.arange(tokens, device=dev)[None]


def loss_step(impl: str, h, w, labels, pos, chunk: int):
    if impl == "full":
        loss = lm_loss(F.linear(h, w), labels, pos, "example_mean", 1)
    else:
        loss = hidden_states_loss(h, w, labels, pos, "example_mean", 1, impl, chunk)
    loss.backward()
    return loss


def bench_loss(impl: str, tokens: int, s: dict, probe: Device, dtype: torch.dtype, repeats: int) -> dict:
    row = {"part": "loss step", "impl": impl, "tokens": tokens, "vocab": s["vocab"], "hidden": s["hidden"],
           "chunk": s["chunk"] if impl == "chunked" else None}
    try:
        h, w, labels, pos = loss_inputs(tokens, s["vocab"], s["hidden"], probe.dev, dtype)
        times, peaks, loss = [], [], None
        for _ in range(repeats + 1):  # the first run warms up kernels and the allocator
            h.grad = w.grad = None
            base = probe.start()
            t = time.perf_counter()
            loss = loss_step(impl, h, w, labels, pos, s["chunk"])
            probe.sync()
            times.append(time.perf_counter() - t)
            peaks.append(probe.peak_since(base))
        row.update(loss=float(loss.detach()), time_s=statistics.median(times[1:]), peak_bytes=peaks[-1])
        if peaks[-1] is not None:
            row["peak_bytes_per_token"] = peaks[-1] / tokens
            row["peak_bytes_per_token_per_vocab"] = peaks[-1] / tokens / s["vocab"]
    except torch.cuda.OutOfMemoryError as e:
        row.update(error=f"out of memory: {str(e).splitlines()[0][:160]}")
    finally:
        h = w = labels = pos = None
        if probe.dev.type == "cuda":
            torch.cuda.empty_cache()
    return row


def bench_layer(s: dict, probe: Device, dtype: torch.dtype, repeats: int) -> dict:
    """One Qwen2.5-32B-shaped decoder layer, checkpointed forward + backward at ``tokens``."""
    from torch.utils.checkpoint import checkpoint
    from transformers import Qwen2Config
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2RotaryEmbedding

    cfg = Qwen2Config(hidden_size=s["hidden"], intermediate_size=s["intermediate"], num_attention_heads=s["heads"],
                      num_key_value_heads=s["kv_heads"], num_hidden_layers=1, vocab_size=s["vocab"],
                      max_position_embeddings=max(32768, s["tokens"]), rope_theta=1e6, rms_norm_eps=1e-6)
    cfg._attn_implementation = "sdpa"
    row = {"part": "decoder layer (ckpt fwd+bwd)", "impl": "sdpa", "tokens": s["tokens"], "hidden": s["hidden"],
           "intermediate": s["intermediate"]}
    try:
        layer = Qwen2DecoderLayer(cfg, layer_idx=0).to(probe.dev, dtype)
        rope = Qwen2RotaryEmbedding(cfg).to(probe.dev)
        pos = torch.arange(s["tokens"], device=probe.dev)[None]
        x = torch.randn(1, s["tokens"], s["hidden"], device=probe.dev, dtype=dtype, requires_grad=True)
        cos_sin = rope(x, pos)
        times, peak = [], None
        for _ in range(repeats + 1):
            x.grad = None
            layer.zero_grad(set_to_none=True)
            base = probe.start()
            t = time.perf_counter()
            out = checkpoint(layer, x, None, pos, None, False, cos_sin, use_reentrant=False)
            out.float().pow(2).mean().backward()
            probe.sync()
            times.append(time.perf_counter() - t)
            peak = probe.peak_since(base)
        n_params = sum(p.numel() for p in layer.parameters())
        row.update(time_s=statistics.median(times[1:]), peak_bytes=peak, params=n_params)
        if peak is not None:
            row["peak_bytes_per_token"] = peak / s["tokens"]
    except torch.cuda.OutOfMemoryError as e:
        row.update(error=f"out of memory: {str(e).splitlines()[0][:160]}")
    return row


def liger_ok() -> bool:
    try:
        import liger_kernel.transformers.functional  # noqa: F401
        return torch.cuda.is_available()
    except ImportError:
        return False


def table(rows: list[dict]) -> str:
    lines = ["| part | impl | tokens | chunk | peak GiB | bytes/token | bytes/(token x vocab) | time s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        gib = f"{r['peak_bytes'] / 2**30:.2f}" if r.get("peak_bytes") is not None else r.get("error", "n/a")[:40]
        bpt = f"{r['peak_bytes_per_token']:,.0f}" if "peak_bytes_per_token" in r else ""
        bpv = f"{r['peak_bytes_per_token_per_vocab']:.2f}" if "peak_bytes_per_token_per_vocab" in r else ""
        t = f"{r['time_s']:.3f}" if "time_s" in r else ""
        lines.append(f"| {r['part']} | {r['impl']} | {r['tokens']} | {r.get('chunk') or ''} | {gib} | {bpt} | {bpv} | {t} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="toy sizes on CPU, to prove the script runs")
    p.add_argument("--tokens", type=int)
    p.add_argument("--chunk", type=int)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--skip-layer", action="store_true")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    if not a.cpu_smoke and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU, or pass --cpu-smoke")
    s = dict(SMOKE if a.cpu_smoke else FULL)
    s.update({k: v for k, v in (("tokens", a.tokens), ("chunk", a.chunk)) if v})
    probe = Device(cpu=a.cpu_smoke)
    dtype = torch.float32 if a.cpu_smoke else torch.bfloat16  # bf16 matmuls crawl on many CPUs
    repeats = 1 if a.cpu_smoke else a.repeats
    rows = []
    impls = ["chunked", "full"] + (["liger"] if liger_ok() else [])
    for impl in impls:
        rows.append(bench_loss(impl, s["tokens"], s, probe, dtype, repeats))
        print(json.dumps(rows[-1]), flush=True)
    for tokens in (s["tokens"] // 8, s["tokens"] // 4):  # full logits where they fit: bytes per entry
        rows.append(bench_loss("full", tokens, s, probe, dtype, repeats))
        print(json.dumps(rows[-1]), flush=True)
    if not a.skip_layer:
        rows.append(bench_layer(s, probe, dtype, repeats))
        print(json.dumps(rows[-1]), flush=True)
    device = "cpu (smoke)" if a.cpu_smoke else torch.cuda.get_device_name()
    print(f"\n{device}, torch {torch.__version__}, liger {'yes' if 'liger' in impls else 'not installed'}\n")
    print(table(rows))
    if a.out:
        a.out.write_text(json.dumps({"device": device, "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
