"""Conformance: the selected subset has s1K's column types, whatever the values.

s1K (simplescaling/s1K, data/filter.ipynb cell 26, same schema as data_ablation_full59K):
solution, question, cot_type, source_type, metadata: string; cot: null; thinking_trajectories:
list of string; attempt: string. A column null in every selected row keeps that type, so the
subset concatenates with s1K itself (Parquet and ``datasets``).
"""

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from s1ray.curate.selection import S1K_COLUMNS, S1K_SCHEMA, select_subset, to_s1k, write_subset

S1K_FEATURES = datasets.Features({
    "solution": datasets.Value("string"), "question": datasets.Value("string"),
    "cot_type": datasets.Value("string"), "source_type": datasets.Value("string"),
    "metadata": datasets.Value("string"), "cot": datasets.Value("null"),
    "thinking_trajectories": datasets.List(datasets.Value("string")), "attempt": datasets.Value("string")})


def _s1k_rows():
    return datasets.Dataset.from_dict({
        "solution": ["42"], "question": ["What is six times seven?"], "cot_type": ["math"],
        "source_type": ["qfq/openaimath/Prealgebra"], "metadata": ["{}"], "cot": [None],
        "thinking_trajectories": [["6*7=42"]], "attempt": ["42"]}, features=S1K_FEATURES)


def _pool_with_nulls(n=12):
    return pd.DataFrame({
        "id": [f"q{i}" for i in range(n)], "question": [f"Question number {i}?" for i in range(n)],
        "solution": [None] * n, "answer": [None] * n, "source_type": ["gsm8k"] * n,
        "cot_type": [None] * n,  # null in every row
        "thinking": [[f"trace {i}"] for i in range(n)], "attempt": [None] * n,
        "domain": [None] * n, "metadata": ["{}"] * n,
        "thinking_tokens": [np.nan] * (n - 1) + [17.0],  # a float column with NaN, as pandas reads it
    })


def test_subset_keeps_s1k_types_when_columns_are_all_null(tmp_path):
    sub = select_subset(_pool_with_nulls(), "longest", 5, seed=0)
    paths = write_subset(to_s1k(sub), tmp_path, ["parquet", "jsonl", "hf"])
    table = pq.read_table(paths["parquet"])
    assert table.select(S1K_COLUMNS).schema.equals(S1K_SCHEMA)
    assert table.schema.field("thinking_tokens").type == pa.int64()
    assert table.schema.field("selection_forced").type == pa.bool_()
    s1k = _s1k_rows()
    both = pa.concat_tables([s1k.data.table, table.select(S1K_COLUMNS)])
    assert both.num_rows == 6
    ours = datasets.load_from_disk(paths["hf"])
    assert ours.select_columns(S1K_COLUMNS).features == S1K_FEATURES
    assert len(datasets.concatenate_datasets([s1k, ours.select_columns(S1K_COLUMNS)])) == 6
