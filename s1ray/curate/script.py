"""Writing-system stage: which script each question is written in, and an optional allow-list.

Pools gathered from many sources mix languages; a model trained for one language may want to
keep only its scripts. Scoring counts the letters of each script in the question (RE2 Unicode
classes, vectorised per batch) and records the dominant one; the verdict drops rows whose
script is not in ``allow`` (empty: keep all). Questions without letters (pure formulas) are
``none`` and are always kept.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from s1ray.config import StrictModel
from s1ray.curate.stage import Stage

SCRIPTS = ("latin", "han", "hiragana", "katakana", "hangul", "cyrillic", "greek", "arabic", "hebrew",
           "devanagari", "thai")
SCORE_COLUMNS = {
    "script": "dominant writing system of the question's letters (latin, han, cyrillic, ...; none)",
    "script_share": "share of the question's letters in that script",
}


class ScriptConfig(StrictModel):
    enabled: bool = True
    allow: list[str] = []  # e.g. [latin] or [han, latin]; empty keeps every script


def script_columns(batch: pa.Table) -> pa.Table:
    questions = pc.fill_null(batch["question"], "")
    counts = np.stack([pc.count_substring_regex(questions, rf"\p{{{name.title()}}}").to_numpy(zero_copy_only=False)
                       for name in SCRIPTS], axis=1).astype(np.int64)
    total = counts.sum(axis=1)
    best = counts.argmax(axis=1)
    script = np.where(total > 0, np.array(SCRIPTS, dtype=object)[best], "none")
    share = np.where(total > 0, counts[np.arange(len(best)), best] / np.maximum(total, 1), 0.0)
    batch = batch.append_column("script", pa.array(script, pa.string()))
    return batch.append_column("script_share", pa.array(share, pa.float32()))


def score_script(ds, cfg):
    return ds.map_batches(script_columns, batch_format="pyarrow", batch_size=cfg.batch_size)


def script_verdict(batch: pa.Table, cfg: ScriptConfig) -> list[tuple[str, np.ndarray]]:
    reason = np.full(batch.num_rows, "", dtype=object)
    if cfg.allow and "script" in batch.column_names:
        script = np.asarray(batch["script"].to_numpy(zero_copy_only=False), dtype=object)
        out = (script != "none") & ~np.isin(script, cfg.allow)
        reason[out] = np.array([f"script:{s}" for s in script[out]], dtype=object)
    return [("script", reason)]


# Scores need no config (the allow-list is read only by the verdict).
STAGE = Stage("script", ScriptConfig, score_script, script_verdict, SCORE_COLUMNS)
