"""The logits-free loss (chunked cross entropy from the hidden states; Liger on CUDA), without Ray.

Equal to the full-logits loss in value and gradients (hidden states, output weight; fp32 and bf16)
for both reductions, packed rows, masked tokens and an empty micro-batch; the same through a tiny
Llama (tied embeddings, gradient checkpointing); the measured peak memory of the loss step at
Qwen2.5's vocabulary; how ``loss_impl`` is resolved. The Ray Train + DeepSpeed ZeRO-3 run with it
is in test_trainer.py.
"""

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from s1ray.config import ConfigError
from s1ray.models.loading import build_tiny_model
from s1ray.train.config import TrainConfig
from s1ray.train.loss import (AUTO_MIN_LOGITS, IGNORE, attach_hidden_states_loss, hidden_states_loss,
                              liger_available, lm_loss, resolve_loss_impl)

REPO = Path(__file__).resolve().parents[2]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=2e-2, atol=2e-3)}


def packed_batch(vocab: int, seed: int = 0):
    """Two rows of 48 tokens: a packed row of three examples with prompts, a single example padded at the end."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, (2, 48), generator=g)
    pos = torch.stack([torch.cat([torch.arange(10), torch.arange(25), torch.arange(13)]), torch.arange(48)])
    for start, prompt in ((0, 4), (10, 6), (35, 3)):  # prompt tokens (and each example's first) carry no label
        labels[0, start:start + prompt] = IGNORE
    labels[1, :5] = IGNORE
    labels[1, 30:] = IGNORE  # padding
    return labels, pos


def full_and_chunked(dtype, reduction, n_items, labels, pos, chunk=7, vocab=3000, hidden=16):
    torch.manual_seed(1)
    h0 = torch.randn(labels.size(0), labels.size(1), hidden).to(dtype)
    w0 = (torch.randn(vocab, hidden) * 0.3).to(dtype)
    out = {}
    for impl in ("full", "chunked"):
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        if impl == "full":
            loss = lm_loss(torch.nn.functional.linear(h, w), labels, pos, reduction, n_items)
        else:
            loss = hidden_states_loss(h, w, labels, pos, reduction, n_items, "chunked", chunk)
        loss.backward()
        out[impl] = (loss.detach(), h.grad, w.grad)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction,n_items", [("token_mean", 60), ("example_mean", 5)])
def test_chunked_loss_and_gradients_equal_the_full_logits(dtype, reduction, n_items):
    labels, pos = packed_batch(3000)
    out = full_and_chunked(dtype, reduction, n_items, labels, pos)
    (loss_f, gh_f, gw_f), (loss_c, gh_c, gw_c) = out["full"], out["chunked"]
    assert loss_f > 0 and gh_f.abs().sum() > 0 and gw_f.abs().sum() > 0
    torch.testing.assert_close(loss_c, loss_f, rtol=1e-5, atol=1e-6)  # both are fp32 cross entropies
    torch.testing.assert_close(gh_c, gh_f, **TOL[dtype])
    torch.testing.assert_close(gw_c.float(), gw_f.float(), **TOL[dtype])
    assert gh_c.dtype == gw_c.dtype == dtype
    # masked targets give nothing: the hidden state before a masked label has zero gradient
    masked = (labels[:, 1:] == IGNORE)
    assert gh_c[:, :-1][masked].abs().max() == 0 and gh_c[:, -1].abs().max() == 0


def test_example_mean_is_the_mean_of_each_examples_own_mean():
    """Four examples (three packed in row 0, one padded in row 1): each weighs 1/4 whatever its length."""
    labels, pos = packed_batch(3000)
    torch.manual_seed(2)
    h, w = torch.randn(2, 48, 16), torch.randn(3000, 16)
    ce = torch.nn.functional.cross_entropy((h @ w.t())[:, :-1].reshape(-1, 3000), labels[:, 1:].reshape(-1),
                                           ignore_index=IGNORE, reduction="none").view(2, 47)
    # ce[j] predicts token j+1; targets: row 0 tokens 4..9, 16..34, 38..47; row 1 tokens 5..29
    spans = [(0, 3, 9), (0, 15, 34), (0, 37, 47), (1, 4, 29)]
    want = sum(ce[r, a:b].mean() for r, a, b in spans) / 4
    torch.testing.assert_close(hidden_states_loss(h, w, labels, pos, "example_mean", 4, "chunked", 5), want)
    want_tokens = sum(ce[r, a:b].sum() for r, a, b in spans) / 60
    torch.testing.assert_close(hidden_states_loss(h, w, labels, pos, "token_mean", 60, "chunked", 5), want_tokens)
    assert not torch.isclose(want, want_tokens)


def test_an_empty_micro_batch_gives_zero_loss_and_zero_gradients():
    labels = torch.full((1, 6), IGNORE)
    h = torch.randn(1, 6, 16, requires_grad=True)
    w = torch.randn(300, 16, requires_grad=True)
    for reduction in ("token_mean", "example_mean"):
        loss = hidden_states_loss(h, w, labels, torch.arange(6)[None], reduction, 0, "chunked", 4)
        loss.backward()
        assert float(loss.detach()) == 0.0 and h.grad.abs().max() == 0 and w.grad.abs().max() == 0


@pytest.mark.parametrize("reduction", ["token_mean", "example_mean"])
def test_tiny_llama_with_tied_embeddings_and_checkpointing_gets_the_full_logits_gradients(reduction):
    """The model's forward with the loss attached: decoder -> hidden states -> chunked loss against the
    tied output embedding; every parameter's gradient equals the full-logits path's."""
    vocab = 20000
    labels, pos = packed_batch(vocab, seed=3)
    ids = labels.clamp_min(0)
    grads = {}
    for impl in ("full", "chunked"):
        model = build_tiny_model("tiny", vocab, seed=0)
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        if impl == "full":
            logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
            loss = lm_loss(logits, labels, pos, reduction, 7)
        else:
            attach_hidden_states_loss(model, "chunked", 16)
            out = model(input_ids=ids, position_ids=pos, labels=labels, loss_reduction=reduction, n_items=7)
            assert out.logits is None
            loss = out.loss
        loss.backward()
        grads[impl] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(grads["chunked"][0], grads["full"][0], rtol=1e-5, atol=1e-6)
    assert grads["chunked"][1].keys() == grads["full"][1].keys()
    for name, g in grads["full"][1].items():
        torch.testing.assert_close(grads["chunked"][1][name], g, rtol=1e-4, atol=1e-6, msg=name)
    # without loss_reduction the attached model is the model: logits as before (generation, evaluation)
    with torch.no_grad():
        assert model(input_ids=ids[:1, :5]).logits.shape == (1, 5, vocab)


def measure(impl: str) -> dict:
    cmd = [sys.executable, str(REPO / "tests" / "train" / "loss_memory.py"), "--impl", impl, "--tokens", "4096",
           "--vocab", "152064", "--hidden", "32", "--dtype", "float32"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, f"{impl}: exit {out.returncode} (-9: killed, out of memory?)\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_peak_memory_of_the_loss_step_at_qwen_vocabulary_is_at_least_5x_lower():
    """4,096 tokens x 152,064 vocabulary, each path in its own process (peak RSS growth over the step).
    Measured here (fp32): full ~12 bytes per (token, vocab entry), 7.5 GB; chunked (1024-token
    chunks) ~0.67 GB, 4 bytes per (chunk token, vocab entry) plus the weight-gradient buffers."""
    chunked = measure("chunked")
    full = measure("full")
    assert full["loss"] == pytest.approx(chunked["loss"], rel=1e-5)
    assert full["bytes_per_token_per_vocab"] > 8  # the logits, their log-softmax and its gradient
    assert full["peak_bytes"] >= 5 * chunked["peak_bytes"], (full, chunked)


def test_gpu_benchmark_script_runs_at_toy_size_on_cpu(tmp_path):
    """tests/gpu/bench_loss_memory.py (run on a lent GPU) executes end to end with --cpu-smoke."""
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(REPO / "tests" / "gpu" / "bench_loss_memory.py"), "--cpu-smoke",
                          "--out", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["part"], r["impl"]) for r in rows][:2] == [("loss step", "chunked"), ("loss step", "full")]
    assert rows[0]["loss"] == pytest.approx(rows[1]["loss"], rel=1e-5) and rows[-1]["part"].startswith("decoder")
    assert all("error" not in r and r["time_s"] > 0 for r in rows)
    assert "| loss step | chunked |" in run.stdout


# ------------------------------------------------------------------ choosing the path
def test_auto_keeps_small_runs_on_the_full_logits_and_long_blocks_off_them():
    small, big = (512, 49152), (32768, 152064)
    assert small[0] * small[1] < AUTO_MIN_LOGITS <= big[0] * big[1]
    assert resolve_loss_impl("auto", *small, "cpu", liger=True) == "full"
    assert resolve_loss_impl("auto", *small, "cuda", liger=True) == "full"
    assert resolve_loss_impl("auto", *big, "cpu", liger=True) == "chunked"  # Liger never on CPU
    assert resolve_loss_impl("auto", *big, "cuda", liger=False) == "chunked"
    assert resolve_loss_impl("auto", *big, "cuda", liger=True) == "liger"
    assert resolve_loss_impl("full", *big, "cuda", liger=True) == "full"
    assert resolve_loss_impl("chunked", *small, "cuda", liger=True) == "chunked"
    assert resolve_loss_impl("liger", *small, "cuda", liger=True) == "liger"
    with pytest.raises(ConfigError, match="CUDA only"):
        resolve_loss_impl("liger", *big, "cpu", liger=True)
    with pytest.raises(ConfigError, match="liger-kernel>=0.8.2"):
        resolve_loss_impl("liger", *big, "cuda", liger=False)


def fake_liger(monkeypatch, version: str | None):
    """Make ``liger_kernel.transformers.functional`` importable (None: absent) at a given release."""
    import importlib.metadata

    for name in ("liger_kernel", "liger_kernel.transformers", "liger_kernel.transformers.functional"):
        monkeypatch.setitem(sys.modules, name, None if version is None else types.ModuleType(name))
    if version is not None:
        sys.modules["liger_kernel.transformers.functional"].liger_fused_linear_cross_entropy = lambda *a, **k: None
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: version if name == "liger-kernel" and version else real(name))


@pytest.mark.parametrize("version,ok", [(None, False), ("0.8.1", False), ("0.8.2", True), ("0.8.5", True),
                                        ("0.10.0.dev20261027", True)])
def test_liger_is_used_only_when_an_exact_release_imports(monkeypatch, version, ok):
    fake_liger(monkeypatch, version)
    assert liger_available() is ok
    assert resolve_loss_impl("auto", 32768, 152064, "cuda") == ("liger" if ok else "chunked")
    assert resolve_loss_impl("auto", 32768, 152064, "cpu") == "chunked"


def test_config_names_the_loss_fields_and_refuses_liger_without_a_gpu():
    base = {"data": {"name": "x", "path": "x.jsonl"}, "model": "tiny:tiny", "global_batch_size": 4}
    cfg = TrainConfig.model_validate(base)
    assert cfg.loss_impl == "auto" and cfg.loss_chunk_tokens == 1024
    with pytest.raises(ValueError, match="loss_impl: liger runs Triton kernels on CUDA only"):
        TrainConfig.model_validate({**base, "loss_impl": "liger"})
    with pytest.raises(ValueError, match="loss_chunk_tokens"):
        TrainConfig.model_validate({**base, "loss_chunk_tokens": 0})
    assert TrainConfig.model_validate({**base, "loss_impl": "liger", "use_gpu": True}).loss_impl == "liger"
