"""``s1ray curate`` reading and writing as Ray work: files split into shards give the same pool as
whole files (row_index, origins, quarantine), outputs are written in read order by tasks, and a
broken file inside a Ray task is an error naming it, never a raw traceback."""

import csv
import gzip
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from s1ray.curate.config import CurateConfig
from s1ray.curate.pipeline import run_curate
from s1ray.io import readers, writers
from s1ray.io.readers import SourceError

TOPICS = ["apples", "pears", "coins", "marbles", "stamps", "shells", "cards", "books"]


def _question(i: int) -> str:
    t = TOPICS[i % len(TOPICS)]
    return f"Sam has {i + 2} {t} in one box and {3 * i + 1} {t} in another box. How many {t} in all, row {i}?"


def _fixtures(d):
    lines = [json.dumps({"problem": _question(i), "solution": f"\\boxed{{{4 * i + 3}}}"}).encode() for i in range(60)]
    lines[7] = b'{"problem": "cut short'  # bad JSON
    lines[20] = lines[3]  # exact duplicate of row 4
    lines[33] = b""  # blank line: skipped, still numbered
    lines[41] = json.dumps({"solution": "no question"}).encode()
    (d / "big.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    rows = [json.dumps({"question": _question(100 + i), "answer": f"#### {i}"}) for i in range(300)]
    data = gzip.compress(("\n".join(rows) + "\n").encode())
    (d / "cut.jsonl.gz").write_bytes(data[: len(data) * 3 // 4])
    with open(d / "bom.csv", "w", newline="", encoding="utf-8-sig") as f:
        w = csv.DictWriter(f, fieldnames=["question", "answer"])
        w.writeheader()
        for i in range(5):
            w.writerow({"question": _question(500 + i), "answer": f"#### {i}"})


def _cfg(d, out):
    return CurateConfig.model_validate({
        "sources": [{"name": "big", "path": str(d / "big.jsonl"), "preset": "math"},
                    {"name": "cut", "path": str(d / "cut.jsonl.gz"), "preset": "gsm8k"},
                    {"name": "bom", "path": str(d / "bom.csv"), "preset": "gsm8k"}],
        "output_dir": str(d / out), "batch_size": 16, "plot": False})


def test_sharded_read_and_parallel_write_equal_whole_files(ray_local, tmp_path, monkeypatch):
    _fixtures(tmp_path)
    whole = run_curate(_cfg(tmp_path, "whole"))
    monkeypatch.setattr(readers, "SHARD_BYTES", 500)  # ~15 shards for big.jsonl, edges inside lines
    monkeypatch.setattr(writers, "PART_ROWS", 40)  # several parts per output
    assert len(readers.plan_shards(_cfg(tmp_path, "split").sources[0])) > 10
    split = run_curate(_cfg(tmp_path, "split"))

    pool = pq.read_table(split["paths"]["scored_pool"])
    assert pool.equals(pq.read_table(whole["paths"]["scored_pool"]))
    assert len(list((tmp_path / "split" / "scored_pool.parquet").glob("part-*.parquet"))) > 3
    df = pd.read_parquet(split["paths"]["scored_pool"])
    assert df.row_index.tolist() == list(range(len(df)))  # read order: sources in config order, rows in file order
    big = df[df.source == "big"]
    assert big.origin.iloc[0] == f"{tmp_path / 'big.jsonl'}:1" and big.origin.iloc[-1] == f"{tmp_path / 'big.jsonl'}:60"
    assert big.question.iloc[40] == _question(43)  # rows 8 and 42 quarantined, line 34 blank
    assert df[df.source == "bom"].question.tolist() == [_question(500 + i) for i in range(5)]

    quarantine = [json.loads(x) for x in open(split["paths"]["quarantine"])]
    assert quarantine == [json.loads(x) for x in open(whole["paths"]["quarantine"])]
    assert [(q["source"], q["row"], q["reason"][:9]) for q in quarantine[:2]] == [
        ("big", "8", "bad JSON:"), ("big", "42", "missing q")]
    cut = quarantine[2]
    n_cut = int((df.source == "cut").sum())
    assert cut["source"] == "cut" and cut["reason"].startswith("truncated:") and cut["file"].endswith("cut.jsonl.gz")
    assert 0 < n_cut < 300 and cut["row"] == str(n_cut + 1) and f"after line {n_cut}" in cut["reason"]
    assert split["input"] == 59 + n_cut + 1 + 5 and split["quarantined"] == 3 and split["accounting"]["ok"]

    kept = [json.loads(x) for x in open(split["paths"]["kept"])]
    assert [k["row_index"] for k in kept] == df[df.keep].row_index.tolist()
    assert open(split["paths"]["kept"], "rb").read() == open(whole["paths"]["kept"], "rb").read()
    assert split["reasons"] == whole["reasons"] and split["reasons"]["dedup"] == {"exact_duplicate": 1}

    # The read cache is stored the same way and read back in order.
    again = run_curate(_cfg(tmp_path, "split"))
    assert again["stages"]["read"]["status"] == "reused"
    assert pq.read_table(again["paths"]["scored_pool"]).equals(pool)


def test_corrupt_file_in_a_read_task_is_an_error_naming_it(ray_local, tmp_path):
    _fixtures(tmp_path)
    (tmp_path / "cut.jsonl.gz").write_bytes(b"not gzip at all\n" * 4)
    with pytest.raises(SourceError, match=r"cut\.jsonl\.gz") as e:
        run_curate(_cfg(tmp_path, "out"))
    assert "Traceback" not in str(e.value) and "RayTaskError" not in str(e.value)


def test_cli_reports_a_broken_file_in_one_line(ray_local, tmp_path, capsys):
    from s1ray.cli import main

    _fixtures(tmp_path)
    (tmp_path / "cut.jsonl.gz").write_bytes(b"not gzip at all\n" * 4)
    config = tmp_path / "curate.yaml"
    config.write_text(json.dumps(_cfg(tmp_path, "cli").model_dump(mode="json", exclude_unset=True)))
    assert main(["curate", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "cut.jsonl.gz" in err and "Traceback" not in err


def test_write_ordered_sorts_blocks_that_interleave(ray_local, tmp_path):
    import pyarrow as pa

    from s1ray.io.writers import write_ordered

    a = pa.table({"row_index": [0, 1, 2, 3, 4, 10, 11, 12, 13, 14], "keep": [True] * 10})
    b = pa.table({"row_index": [5, 6, 7, 8, 9], "keep": [False, True, False, True, False]})
    written = write_ordered(ray_local.data.from_arrow([a, b]), tmp_path / "pool.parquet", batch_rows=10,
                            kept_jsonl=tmp_path / "kept.jsonl")
    assert pq.read_table(tmp_path / "pool.parquet")["row_index"].to_pylist() == list(range(15))
    assert written.rows == 15 and written.kept == 12 and written.resorted
    kept = [json.loads(x)["row_index"] for x in open(tmp_path / "kept.jsonl")]
    assert kept == [0, 1, 2, 3, 4, 6, 8, 10, 11, 12, 13, 14]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.jsonl", "pool.parquet"]  # no temporaries left
