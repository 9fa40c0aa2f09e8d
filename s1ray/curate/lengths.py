"""Thinking-trace length in tokens of a configured tokenizer (s1 used Qwen2.5's).

The length is of the resolved trace (the source's own, else the teacher's), so it must run
after the traces stage. Rows without any trace get 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from s1ray.config import StrictModel
from s1ray.curate.traces import resolved_thinking

DEFAULT_TOKENIZER = "packaged:smollm2-135m-instruct"


class LengthsConfig(StrictModel):
    enabled: bool = True
    tokenizer: str = DEFAULT_TOKENIZER  # s1: Qwen/Qwen2.5-32B-Instruct's tokenizer
    trust_remote_code: bool = False


def count_tokens(tokenizer, texts: list[str]) -> np.ndarray:
    """Token counts without special tokens; empty texts are 0 without a tokenizer call."""
    out = np.zeros(len(texts), dtype=np.int64)
    idx = [i for i, t in enumerate(texts) if t]
    if idx:
        enc = tokenizer([texts[i] for i in idx], add_special_tokens=False, verbose=False)["input_ids"]
        out[idx] = [len(ids) for ids in enc]
    return out


class TraceLengths:
    """Ray Data callable class: adds ``thinking_tokens`` (one tokenizer per actor)."""

    def __init__(self, cfg: LengthsConfig | None = None):
        from s1ray.models.loading import load_tokenizer

        cfg = cfg or LengthsConfig()
        self.tokenizer = load_tokenizer(cfg.tokenizer, trust_remote_code=cfg.trust_remote_code)

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        out["thinking_tokens"] = count_tokens(self.tokenizer, resolved_thinking(df))
        return out
