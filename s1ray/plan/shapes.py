"""Model shapes for the planner: parameter counts and the widths activations and logits scale with.

Shapes come from the model's Hugging Face config (a local folder, or the HF cache, never a
download), from ``tiny:``/``packaged:`` models, or from a small built-in table of hub models
whose configs cannot be fetched here (Qwen2.5-*-Instruct, Llama 3.x, SmolLM2-135M).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PlanError(ValueError):
    """A config or model the planner cannot size; the message names it."""


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only (Llama/Qwen2-style) transformer: SwiGLU MLP, RMSNorm, grouped-query attention."""

    name: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied_embeddings: bool
    qkv_bias: bool = False  # Qwen2 has biases on q/k/v

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        h, kv, q = self.hidden_size, self.kv_width, self.num_heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h + (q + 2 * kv if self.qkv_bias else 0)
        return attn + 3 * h * self.intermediate_size + 2 * h  # + two RMSNorm weights

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def params(self) -> int:
        head = 0 if self.tied_embeddings else self.embedding_params
        return self.embedding_params + head + self.num_layers * self.layer_params + self.hidden_size

    @property
    def largest_module_params(self) -> int:
        """The most parameters one module owns directly (DeepSpeed's ``model_to_params``): the embedding."""
        h, q = self.hidden_size, self.num_heads * self.head_dim
        return max(self.embedding_params, h * self.intermediate_size, h * q + (q if self.qkv_bias else 0))


def _qwen(hidden: int, layers: int, inter: int, heads: int, kv: int, vocab: int, tied: bool) -> dict[str, Any]:
    return dict(vocab_size=vocab, hidden_size=hidden, num_layers=layers, intermediate_size=inter,
                num_heads=heads, num_kv_heads=kv, head_dim=hidden // heads, tied_embeddings=tied, qkv_bias=True)


def _llama(hidden: int, layers: int, inter: int, heads: int, kv: int, vocab: int, tied: bool) -> dict[str, Any]:
    return dict(vocab_size=vocab, hidden_size=hidden, num_layers=layers, intermediate_size=inter,
                num_heads=heads, num_kv_heads=kv, head_dim=hidden // heads, tied_embeddings=tied)


# Published config.json values of models the planner is asked about without network access.
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-0.5B-Instruct": _qwen(896, 24, 4864, 14, 2, 151936, True),
    "Qwen/Qwen2.5-1.5B-Instruct": _qwen(1536, 28, 8960, 12, 2, 151936, True),
    "Qwen/Qwen2.5-7B-Instruct": _qwen(3584, 28, 18944, 28, 4, 152064, False),
    "Qwen/Qwen2.5-14B-Instruct": _qwen(5120, 48, 13824, 40, 8, 152064, False),
    "Qwen/Qwen2.5-32B-Instruct": _qwen(5120, 64, 27648, 40, 8, 152064, False),
    "meta-llama/Llama-3.2-1B-Instruct": _llama(2048, 16, 8192, 32, 8, 128256, True),
    "meta-llama/Llama-3.2-3B-Instruct": _llama(3072, 28, 8192, 24, 8, 128256, True),
    "meta-llama/Llama-3.1-8B-Instruct": _llama(4096, 32, 14336, 32, 8, 128256, False),
    "meta-llama/Llama-3.1-70B-Instruct": _llama(8192, 80, 28672, 64, 8, 128256, False),
    "packaged:smollm2-135m-instruct": dict(_llama(576, 30, 1536, 9, 3, 49152, True), head_dim=64),
}
TINY_VOCAB = 49152  # tiny: models use the packaged SmolLM2 tokenizer (s1ray.models.loading)


def shape_from_hf_config(name: str, config: Any) -> ModelShape:
    """From a transformers config object (or anything with its attributes)."""
    get = lambda key, default=None: getattr(config, key, default)  # noqa: E731
    heads = get("num_attention_heads")
    hidden = get("hidden_size")
    if not hidden or not heads or not get("num_hidden_layers") or not get("intermediate_size"):
        raise PlanError(f"model {name}: its config lacks hidden_size/num_attention_heads/num_hidden_layers/"
                        "intermediate_size; the planner knows decoder-only Llama/Qwen-style models")
    return ModelShape(name=name, vocab_size=get("vocab_size"), hidden_size=hidden,
                      num_layers=get("num_hidden_layers"), intermediate_size=get("intermediate_size"),
                      num_heads=heads, num_kv_heads=get("num_key_value_heads") or heads,
                      head_dim=get("head_dim") or hidden // heads,
                      tied_embeddings=bool(get("tie_word_embeddings", False)),
                      qkv_bias=bool(get("attention_bias", False)) or get("model_type") == "qwen2")


def model_shape(name: str, trust_remote_code: bool = False) -> ModelShape:
    """The shape of ``name``: ``tiny:PRESET``, ``packaged:NAME``, a local folder, a known or cached hub id."""
    if name.startswith("tiny:"):
        from s1ray.models.loading import TINY

        preset = name.split(":", 1)[1]
        if preset not in TINY:
            raise PlanError(f"model {name}: unknown tiny preset; known: {sorted(TINY)}")
        t = TINY[preset]
        return ModelShape(name=name, vocab_size=TINY_VOCAB, hidden_size=t["hidden_size"],
                          num_layers=t["num_hidden_layers"], intermediate_size=t["intermediate_size"],
                          num_heads=t["num_attention_heads"], num_kv_heads=t["num_key_value_heads"],
                          head_dim=t["hidden_size"] // t["num_attention_heads"], tied_embeddings=True)
    if name in KNOWN_SHAPES:
        return ModelShape(name=name, **KNOWN_SHAPES[name])
    from transformers import AutoConfig

    local = Path(name).expanduser()
    try:
        config = AutoConfig.from_pretrained(str(local) if local.exists() else name, local_files_only=True,
                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise PlanError(f"model {name}: no local folder or cached Hugging Face config, and not in the planner's "
                        f"table ({', '.join(sorted(KNOWN_SHAPES))}); pass a folder holding its config.json") from e
    return shape_from_hf_config(name, config)
