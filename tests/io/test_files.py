"""Files as people have them: byte-order marks, CRLF, compressed files (whole and cut short),
and large files split into shards that read back exactly like the whole file."""

import bz2
import csv
import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s1ray.io import readers
from s1ray.io.readers import SourceConfig, SourceError, plan_shards, read_source

ROWS = [{"problem": f"What is ${i}+{i}$ when counting {i} apples twice?", "solution": f"$\\boxed{{{2 * i}}}$"}
        for i in range(1, 41)]


def _read(path, preset="math", **kw):
    return read_source(SourceConfig(name="src", path=str(path), preset=preset, **kw))


def _jsonl_bytes(rows, newline=b"\n"):
    return b"".join(json.dumps(r).encode() + newline for r in rows)


def _compress(data: bytes, kind: str) -> bytes:
    if kind == "gz":
        return gzip.compress(data)
    if kind == "bz2":
        return bz2.compress(data)
    return pa.compress(data, codec="zstd", asbytes=True)


def _csv_text(rows, lineterminator="\n"):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator=lineterminator)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def test_byte_order_marks_are_ignored(tmp_path):
    (tmp_path / "b.jsonl").write_bytes(b"\xef\xbb\xbf" + _jsonl_bytes(ROWS[:3]))
    (tmp_path / "b.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS[:3]).encode())
    (tmp_path / "b.csv").write_bytes(b"\xef\xbb\xbf" + _csv_text(ROWS[:3]).encode())
    for name in ("b.jsonl", "b.json", "b.csv"):
        res = _read(tmp_path / name)
        assert not res.quarantined, (name, res.quarantined)
        assert [r["question"] for r in res.records] == [r["problem"] for r in ROWS[:3]], name


def test_crlf_line_ends(tmp_path):
    (tmp_path / "w.jsonl").write_bytes(_jsonl_bytes(ROWS[:3], b"\r\n"))
    (tmp_path / "w.csv").write_bytes(_csv_text(ROWS[:3], "\r\n").encode())
    for name in ("w.jsonl", "w.csv"):
        res = _read(tmp_path / name)
        assert not res.quarantined and res.n_rows == 3, name
        assert [r["answer"] for r in res.records] == ["2", "4", "6"], name
        assert not any("\r" in r["question"] or "\r" in r["solution"] for r in res.records)


@pytest.mark.parametrize("kind", ["gz", "bz2", "zst"])
def test_compressed_files_read_like_plain_ones(tmp_path, kind):
    plain = tmp_path / "p.jsonl"
    plain.write_bytes(_jsonl_bytes(ROWS))
    (tmp_path / f"p.jsonl.{kind}").write_bytes(_compress(plain.read_bytes(), kind))
    (tmp_path / f"p.csv.{kind}").write_bytes(_compress(_csv_text(ROWS).encode(), kind))
    want = [r["question"] for r in _read(plain).records]
    for name in (f"p.jsonl.{kind}", f"p.csv.{kind}"):
        res = _read(tmp_path / name)
        assert not res.quarantined and [r["question"] for r in res.records] == want, name


@pytest.mark.parametrize("kind", ["gz", "bz2", "zst"])
def test_truncated_compressed_jsonl_keeps_rows_read_and_records_the_cut(tmp_path, kind):
    # Distinct rows, large enough that every codec has emitted whole blocks before the cut.
    rows = [{"problem": f"How many apples are {i} apples plus {i * 7 % 13} more?", "solution": f"\\boxed{{{i}}}"}
            for i in range(20_000)]
    data = _compress(_jsonl_bytes(rows), kind)
    path = tmp_path / f"cut.jsonl.{kind}"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.warns(UserWarning, match="cut.jsonl"):
        res = _read(path)
    cut = [q for q in res.quarantined if q["reason"].startswith("truncated:")]
    assert len(cut) == 1 and len(res.quarantined) == 1
    kept = len(res.records)
    assert 0 < kept < len(rows)
    assert [r["question"] for r in res.records] == [r["problem"] for r in rows[:kept]]
    assert cut[0]["file"] == str(path) and f"after line {kept}" in cut[0]["reason"]
    assert cut[0]["row"] == str(kept + 1)
    assert res.n_rows == kept + 1  # the line that was cut off is counted, so the funnel balances


def test_truncated_compressed_csv_keeps_rows_and_json_is_a_clear_error(tmp_path):
    data = gzip.compress(_csv_text(ROWS * 400).encode())
    (tmp_path / "cut.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="truncated"):
        res = _read(tmp_path / "cut.csv.gz")
    assert res.records and res.quarantined[-1]["reason"].startswith("truncated:")
    assert res.n_rows == len(res.records) + 1
    data = gzip.compress(json.dumps(ROWS * 400).encode())
    (tmp_path / "cut.json.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"cut\.json\.gz.*truncated"):
        _read(tmp_path / "cut.json.gz")


def test_corrupt_compressed_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "fake.jsonl.gz").write_bytes(b"this is not gzip data at all\n" * 10)
    with pytest.raises(SourceError, match="fake.jsonl.gz"):
        _read(tmp_path / "fake.jsonl.gz")
    with pytest.raises(SourceError, match="cannot tell the format"):
        _read(tmp_path / "data.parquet.gz")


def test_sharded_jsonl_reads_like_one_piece(tmp_path, monkeypatch):
    lines = [json.dumps(r).encode() for r in ROWS]
    lines[5] = b'{"problem": "broken'
    lines[17] = b"   "  # blank lines are skipped but still numbered
    lines[30] = json.dumps({"solution": "no question"}).encode()
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    whole = _read(path)
    monkeypatch.setattr(readers, "SHARD_BYTES", 97)  # shard edges fall inside lines
    shards = plan_shards(SourceConfig(name="src", path=str(path), preset="math"))
    assert len(shards) > 10 and shards[-1].end == path.stat().st_size
    split = _read(path)
    assert split.records == whole.records and split.quarantined == whole.quarantined
    assert split.n_rows == whole.n_rows == 39
    assert {q["row"]: q["reason"][:8] for q in split.quarantined} == {"6": "bad JSON", "31": "missing "}
    assert split.records[-1]["origin"] == f"{path}:40"


def test_parquet_row_groups_are_shards(tmp_path, monkeypatch):
    path = tmp_path / "rg.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path, row_group_size=7)
    monkeypatch.setattr(readers, "SHARD_ROWS", 10)
    shards = plan_shards(SourceConfig(name="src", path=str(path), preset="math"))
    assert [(s.start, s.end, s.first_row) for s in shards] == [(0, 2, 0), (2, 4, 14), (4, 6, 28)]
    res = _read(path)
    assert [r["question"] for r in res.records] == [r["problem"] for r in ROWS]
    assert res.records[20]["origin"] == f"{path}:20"
