"""Hostile inputs: no single row aborts a read, nothing is coerced silently.

Every case writes one file and reads it with the real reader (no Ray): either the whole file is
refused with a :class:`SourceError` naming it (a file that cannot be read at all), or every row is
accounted for exactly: rows seen = records + quarantined, each quarantine row naming the file, the
row and (where there is one) the field. The records then convert to the canonical Arrow table and
the quarantine rows to JSON Lines, the two steps that failed whole read tasks before. A few cases
go through ``s1ray curate`` end to end (one shared Ray instance, rule-only config).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s1ray.io.readers import SourceConfig, SourceError, read_source
from s1ray.io.writers import write_jsonl
from s1ray.records import to_table

Q = [f"How many apples are left when {i} of {i + 9} apples are eaten by the horse?" for i in range(12)]


def jl(*rows) -> bytes:
    """JSON Lines from dicts (dumped) and str/bytes (written as they are)."""
    out = []
    for r in rows:
        out.append(r if isinstance(r, bytes) else r.encode("utf-8", "surrogatepass") if isinstance(r, str)
                   else json.dumps(r).encode())
    return b"\n".join(out) + b"\n"


def good(i: int) -> dict:
    return {"question": Q[i], "answer": str(i)}


def csv_bytes(rows: list[list[str]], header=("question", "answer"), newline="\n") -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=newline)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@dataclass
class Case:
    name: str
    file: str
    data: bytes | Callable[[Path], None]  # bytes, or a function that makes the path itself
    rows: int = 0  # rows seen
    kept: int = 0  # records
    quarantined: dict[str, str] = field(default_factory=dict)  # row -> text the reason holds
    error: str | None = None  # the whole file is refused: a SourceError matching this
    warning: str | None = None
    spec: dict = field(default_factory=dict)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _loop(path: Path) -> None:
    other = path.with_name("other.jsonl")
    os.symlink(other, path)
    os.symlink(path, other)


def _dir(path: Path) -> None:
    path.mkdir()
    (path / "x.jsonl").write_text("{}\n")


def _device(path: Path) -> None:
    os.symlink("/dev/zero", path)


def _truncated_gz_jsonl(path: Path) -> None:
    rows = [{"question": f"Question number {i} about apples and {i * 7 % 13} pears?", "answer": str(i)}
            for i in range(20_000)]
    data = gzip.compress(jl(*rows))
    path.write_bytes(data[: len(data) // 2])


NESTED = "[" * 100_000 + "]" * 100_000
CASES = [
    # --- JSON Lines: one bad line costs one row --------------------------------------------
    Case("deeply_nested_json_line", "d.jsonl", jl(good(0), '{"question": ' + NESTED + "}", good(1)),
         rows=3, kept=2, quarantined={"2": "nested too deeply"}),
    Case("lone_surrogate_in_question", "d.jsonl", jl(good(0), '{"question": "Why \\ud800 here?", "answer": "1"}'),
         rows=2, kept=1, quarantined={"2": "question holds a lone surrogate"}),
    Case("lone_surrogate_in_unknown_column", "d.jsonl", jl('{"question": "%s", "note": "\\udfff"}' % Q[3], good(1)),
         rows=2, kept=1, quarantined={"1": "metadata holds a lone surrogate"}),
    Case("duplicate_keys", "d.jsonl", jl(good(0), '{"question": "%s", "question": "%s"}' % (Q[1], Q[2])),
         rows=2, kept=1, quarantined={"2": "duplicate key 'question'"}),
    Case("nan_question", "d.jsonl", jl('{"question": NaN, "answer": "1"}', good(1)),
         rows=2, kept=1, quarantined={"1": "question is nan"}),
    Case("infinity_answer", "d.jsonl", jl(good(0), '{"question": "%s", "answer": Infinity}' % Q[1]),
         rows=2, kept=1, quarantined={"2": "answer is inf"}),
    Case("overflowing_float_question", "d.jsonl", jl('{"question": 1e999}', good(2)),
         rows=2, kept=1, quarantined={"1": "question is inf"}),
    Case("huge_integer", "d.jsonl", jl(good(0), '{"question": "%s", "answer": %s}' % (Q[1], "9" * 5000)),
         rows=2, kept=1, quarantined={"2": "bad JSON"}),
    Case("number_as_question", "d.jsonl", jl({"question": 12345, "answer": "1"}, good(1)),
         rows=2, kept=1, quarantined={"1": "question is a number"}),
    Case("bool_as_question", "d.jsonl", jl({"question": True}, good(1)),
         rows=2, kept=1, quarantined={"1": "question is a bool"}),
    Case("byte_order_mark", "d.jsonl", b"\xef\xbb\xbf" + jl(good(0), good(1)), rows=2, kept=2),
    Case("bom_inside_concatenated_files", "d.jsonl", jl(good(0), b"\xef\xbb\xbf" + json.dumps(good(1)).encode()),
         rows=2, kept=1, quarantined={"2": "bad JSON"}),
    Case("crlf_line_ends", "d.jsonl", jl(good(0), good(1)).replace(b"\n", b"\r\n"), rows=2, kept=2),
    Case("raw_nul_bytes", "d.jsonl", jl(good(0), b'{"question": "a\x00b"}'),
         rows=2, kept=1, quarantined={"2": "bad JSON"}),
    Case("escaped_nul_in_question", "d.jsonl", jl(good(0), '{"question": "What \\u0000 is this?"}'),
         rows=2, kept=1, quarantined={"2": "NUL"}),
    Case("mixed_encodings", "d.jsonl", jl(good(0), '{"question": "Café au lait?"}'.encode("latin-1"), good(1)),
         rows=3, kept=2, quarantined={"2": "invalid UTF-8"}),
    Case("utf16_file", "d.jsonl", "\n".join(json.dumps(good(i)) for i in range(2)).encode("utf-16"),
         error="UTF-16"),
    Case("very_long_line", "d.jsonl", jl(good(0), {"question": "x " * 3_000_000}, good(1)),
         rows=3, kept=2, quarantined={"2": "absurd length"}),
    Case("wrong_types_per_field", "d.jsonl",
         jl({"question": Q[0], "choices": 7, "answer": "A"}, {"question": Q[1], "attempt_correct": "maybe"},
            {"question": Q[2], "thinking": {"a": 1}}, {"question": Q[3], "answer": ["x"]}, good(4)),
         rows=5, kept=1, quarantined={"1": "choices is a int", "2": "attempt_correct is 'maybe'",
                                      "3": "thinking is a dict", "4": "answer is a list"}),
    Case("unknown_columns_go_to_metadata", "d.jsonl", jl({**good(0), "difficulty": 3, "tags": ["a"]}),
         rows=1, kept=1),
    Case("empty_and_whitespace_questions", "d.jsonl", jl({"question": ""}, {"question": " \t\n "}, good(2)),
         rows=3, kept=1, quarantined={"1": "empty question", "2": "empty question"}),
    Case("missing_required_field", "d.jsonl", jl({"answer": "3"}, good(1)),
         rows=2, kept=1, quarantined={"1": "missing question"}),
    Case("deeply_nested_list_question", "d.jsonl", jl({"question": json.loads("[" * 50 + "]" * 50)}, good(1)),
         rows=2, kept=1, quarantined={"1": "question is a list"}),
    Case("row_not_an_object", "d.jsonl", jl([1, 2], "null", good(2)),
         rows=3, kept=1, quarantined={"1": "not an object", "2": "not an object"}),
    Case("blank_lines_are_not_rows", "d.jsonl", jl(good(0), "", "   ", good(1)), rows=2, kept=2),
    Case("zero_byte_jsonl", "d.jsonl", b"", warning="has no rows"),
    Case("truncated_gzip_jsonl", "d.jsonl.gz", _truncated_gz_jsonl, error=None, warning="truncated"),
    Case("not_gzip_at_all", "d.jsonl.gz", b"this is not gzip\n" * 5, error="cannot decompress"),
    Case("not_bz2_at_all", "d.jsonl.bz2", b"this is not bz2\n" * 5, error="cannot decompress"),
    # --- JSON documents: a file that cannot be parsed is refused, a bad row is quarantined ------
    Case("zero_byte_json", "d.json", b"", warning="has no rows"),
    Case("empty_gzip_json", "d.json.gz", gzip.compress(b""), warning="has no rows"),
    Case("duplicate_key_in_json_document", "d.json", b'[%s, {"question": "a", "question": "b"}]'
         % json.dumps(good(0)).encode(), rows=2, kept=1, quarantined={"1": "duplicate key 'question'"}),
    Case("deeply_nested_json_document", "d.json", ("[" + NESTED + "]").encode(), error="nested too deeply"),
    Case("truncated_gzip_json", "d.json.gz", gzip.compress(json.dumps([{"question": f"q {i}"} for i in range(3000)])
                                                          .encode())[:2000], error="truncated"),
    Case("json_scalar_document", "d.json", b"42", error="expected a JSON list"),
    # --- CSV: strict quotes, decoded line by line ---------------------------------------------
    Case("csv_cell_over_128_kib", "d.csv", csv_bytes([[Q[0], "1"], ["y" * 200_000, "2"], [Q[1], "3"]]),
         rows=3, kept=2, quarantined={"3": "absurd length"}),
    Case("csv_long_cell_kept_when_allowed", "d.csv", csv_bytes([["y " * 100_000, "2"]]), rows=1, kept=1,
         spec={"max_chars": 300_000}),
    Case("csv_invalid_utf8", "d.csv", csv_bytes([[Q[0], "1"]]) + b"caf\xe9 question?,2\n" + csv_bytes([[Q[1], "3"]])[16:],
         rows=3, kept=2, quarantined={"3": "invalid UTF-8 in column 'question'"}),
    Case("csv_unterminated_quote_mid_file", "d.csv",
         b'question,answer\n"%s,1\n"%s",2\n%s,3\n' % (Q[0].encode(), Q[1].encode(), Q[2].encode()),
         rows=2, kept=1, quarantined={"2": "malformed CSV at lines 2-3"}),
    Case("csv_unterminated_quote_at_end", "d.csv", b'question,answer\n%s,1\n"%s,2\n%s,3\n'
         % (Q[0].encode(), Q[1].encode(), Q[2].encode()),
         rows=2, kept=1, quarantined={"3": "unexpected end of data"}),
    Case("csv_quoted_multiline_question_crlf", "d.csv", csv_bytes([["Line one?\r\nLine two?", "1"]], newline="\r\n"),
         rows=1, kept=1),
    Case("csv_nul_in_cell", "d.csv", b"question,answer\nWhat\x00 is it?,1\n%s,2\n" % Q[0].encode(),
         rows=2, kept=1, quarantined={"2": "NUL"}),
    Case("csv_more_cells_than_header", "d.csv", b"question,answer\n%s,1,extra\n%s,2\n" % (Q[0].encode(), Q[1].encode()),
         rows=2, kept=1, quarantined={"2": "more cells than header"}),
    Case("csv_fewer_cells_than_header", "d.csv", b"question,answer\n%s\n" % Q[0].encode(), rows=1, kept=1),
    Case("csv_header_only", "d.csv", b"question,answer\n", warning="has no rows"),
    Case("csv_bom_and_crlf", "d.csv", b"\xef\xbb\xbf" + csv_bytes([[Q[0], "1"], [Q[1], "2"]], newline="\r\n"),
         rows=2, kept=2),
    Case("csv_invalid_utf8_header", "d.csv", b"quest\xffion,answer\nx,1\n", error="header line"),
    Case("zero_byte_csv", "d.csv", b"", warning="has no rows"),
    Case("csv_nested_json_cell", "d.csv", csv_bytes([[Q[0], NESTED[:3000] + NESTED[-3000:]]]),
         rows=1, kept=1),
    # --- Parquet -------------------------------------------------------------------------------
    Case("parquet_wrong_schema", "d.parquet", parquet_bytes(pa.table({"question": [1, 2], "answer": ["1", "2"]})),
         rows=2, kept=0, quarantined={"0": "question is a number", "1": "question is a number"}),
    Case("parquet_without_question_column", "d.parquet", parquet_bytes(pa.table({"prompt": ["a"]})),
         rows=1, kept=0, quarantined={"0": "missing question"}),
    Case("parquet_nan_answer", "d.parquet", parquet_bytes(pa.table({"question": Q[:2], "answer": [1.0, float("nan")]})),
         rows=2, kept=1, quarantined={"1": "answer is nan"}),
    Case("truncated_parquet", "d.parquet", parquet_bytes(pa.table({"question": Q}))[:-30], error="not a readable Parquet"),
    Case("zero_byte_parquet", "d.parquet", b"", warning="has no rows"),
    Case("parquet_without_rows", "d.parquet", parquet_bytes(pa.table({"question": pa.array([], pa.string())})),
         warning="has no rows"),
    # --- paths that are not regular files: refused before anything is opened --------------------
    Case("fifo", "d.jsonl", _fifo, error="is a FIFO"),
    Case("device", "d.jsonl", _device, error="is a device"),
    Case("symlink_loop", "d.jsonl", _loop, error="symlink loop"),
    Case("directory_as_file", "d.jsonl", _dir, error="is a folder"),
    Case("missing_file", "d.jsonl", lambda p: None, error="file not found"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_file(tmp_path, case):
    path = tmp_path / case.file
    if callable(case.data):
        case.data(path)
    else:
        path.write_bytes(case.data)
    spec = SourceConfig(name="src", path=str(path), **case.spec)
    if case.error:
        with pytest.raises(SourceError, match=case.error) as e:
            read_source(spec)
        assert str(path) in str(e.value)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = read_source(spec)
    if case.name == "truncated_gzip_jsonl":  # where the cut lands depends on the codec: check the shape
        cut = res.quarantined[-1]
        assert len(res.quarantined) == 1 and cut["reason"].startswith(f"truncated: {path}")
        assert res.n_rows == len(res.records) + 1 and cut["row"] == str(len(res.records) + 1)
    else:
        assert (res.n_rows, len(res.records)) == (case.rows, case.kept)
        got = {q["row"]: q["reason"] for q in res.quarantined}
        assert set(got) == set(case.quarantined), got
        for row, why in case.quarantined.items():
            assert why in got[row], (row, got[row])
    assert res.n_rows == len(res.records) + len(res.quarantined)  # the accounting the funnel checks
    assert all(q["file"] == str(path) and q["source"] == "src" for q in res.quarantined)
    if case.warning:
        assert any(case.warning in str(w.message) and str(path) in str(w.message) for w in caught)
    assert to_table(res.records).num_rows == len(res.records)  # storable as UTF-8 Arrow
    assert write_jsonl(res.quarantined, tmp_path / "q.jsonl") == len(res.quarantined)  # storable as UTF-8
    assert [json.loads(x)["row"] for x in open(tmp_path / "q.jsonl", encoding="utf-8")] == \
        [q["row"] for q in res.quarantined]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "secret.jsonl"
    path.write_bytes(jl(good(0)))
    path.chmod(0)
    with pytest.raises(SourceError, match="permission denied") as e:
        read_source(SourceConfig(name="src", path=str(path)))
    assert str(path) in str(e.value)


def test_every_kind_of_compression_keeps_a_bad_row_to_itself(tmp_path):
    data = jl(good(0), '{"question": "broken', good(1))
    for name, packed in (("d.jsonl.gz", gzip.compress(data)), ("d.jsonl.bz2", bz2.compress(data)),
                         ("d.jsonl.zst", pa.compress(data, codec="zstd", asbytes=True))):
        (tmp_path / name).write_bytes(packed)
        res = read_source(SourceConfig(name="src", path=str(tmp_path / name)))
        assert (res.n_rows, len(res.records), [q["row"] for q in res.quarantined]) == (3, 2, ["2"]), name


def test_a_failing_read_task_returns_its_error_instead_of_raising(tmp_path):
    """Ray prints a traceback for every failed task (also the unread results of the others); the
    read task reports the failure as data, and the driver raises it as one message."""
    from s1ray.io.ingest import _read_task
    from s1ray.io.readers import Shard

    (tmp_path / "fake.jsonl.gz").write_bytes(b"not gzip at all\n")
    spec = SourceConfig(name="src", path=str(tmp_path / "fake.jsonl.gz"))
    table, meta = _read_task(spec.model_dump_json(), Shard(), 0)
    assert table.num_rows == 0 and "fake.jsonl.gz" in meta["error"] and "cannot decompress" in meta["error"]


# --- configs -----------------------------------------------------------------------------------

def test_yaml_alias_bomb_is_refused_fast(tmp_path):
    from s1ray.config import ConfigError, load_config
    from s1ray.curate.config import CurateConfig

    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\n")  # 9^9 = 387 million values once expanded
    with pytest.raises(ConfigError, match="aliases") as e:
        load_config(CurateConfig, path)
    assert str(path) in str(e.value)
    (tmp_path / "loop.yaml").write_text("sources: &s [*s]\n")
    with pytest.raises(ConfigError, match="recursive"):
        load_config(CurateConfig, tmp_path / "loop.yaml")
    # a few plain aliases are fine
    (tmp_path / "ok.yaml").write_text("sources: []\nquality: &q {min_words: 4}\neval_sets: []\n")
    assert load_config(CurateConfig, tmp_path / "ok.yaml").quality.min_words == 4


@pytest.mark.parametrize("override, field", [("quality.min_words=true", "quality.min_words"),
                                             ("batch_size=false", "batch_size"),
                                             ("dedup.threshold=true", "dedup.threshold")])
def test_bool_for_a_number_is_a_config_error(override, field):
    from s1ray.config import ConfigError, load_config
    from s1ray.curate.config import CurateConfig

    with pytest.raises(ConfigError, match="expected a number, got the bool") as e:
        load_config(CurateConfig, None, ["sources=[]", override])
    assert field in str(e.value)
    assert load_config(CurateConfig, None, ["sources=[]", "plot=false"]).plot is False  # a real bool stays


def test_set_but_empty_variable_is_a_config_error(monkeypatch):
    from s1ray.config import ConfigError, load_config
    from s1ray.curate.config import CurateConfig

    monkeypatch.setenv("S1RAY_TEST_ROOT", "")
    with pytest.raises(ConfigError, match="S1RAY_TEST_ROOT is set but empty") as e:
        load_config(CurateConfig, None, ["sources=[]", "output_dir=${S1RAY_TEST_ROOT}/x"])
    assert "output_dir" in str(e.value)
    cfg = load_config(CurateConfig, None, ["sources=[]", "output_dir=${S1RAY_TEST_ROOT:-/tmp/o}/x"])
    assert cfg.output_dir == "/tmp/o/x"


def test_fifo_config_file_is_refused(tmp_path):
    from s1ray.config import ConfigError, load_yaml

    os.mkfifo(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_yaml(tmp_path / "c.yaml")


# --- whole runs: exit status, one message, the funnel balances ----------------------------------

def _run_cli(tmp_path, sources, capsys, out="out"):
    from s1ray.cli import main

    config = tmp_path / f"{out}.yaml"
    config.write_text(json.dumps({"sources": sources, "output_dir": str(tmp_path / out), "batch_size": 8,
                                  "plot": False, "quality": {"min_words": 2}}))
    rc = main(["curate", "--config", str(config)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_curate_run_over_hostile_sources_keeps_every_good_row(ray_local, tmp_path, capsys):
    d = tmp_path
    (d / "nested.jsonl").write_bytes(jl(good(0), '{"question": ' + NESTED + "}", good(1)))
    (d / "long.csv").write_bytes(csv_bytes([[Q[2], "1"], ["y" * 200_000, "2"]]))
    (d / "latin.csv").write_bytes(csv_bytes([[Q[3], "1"]]) + b"caf\xe9?,2\n")
    (d / "odd.jsonl").write_bytes(jl('{"question": "\\ud800"}', '{"question": NaN}',
                                     '{"question": "%s", "question": "x"}' % Q[4], good(5)))
    (d / "empty.json").write_bytes(b"")
    (d / "quote.csv").write_bytes(b'question,answer\n"%s,1\n"%s",2\n%s,3\n' % (Q[6].encode(), Q[7].encode(),
                                                                              Q[8].encode()))
    sources = [{"name": p.split(".")[0], "path": str(d / p)} for p in
               ("nested.jsonl", "long.csv", "latin.csv", "odd.jsonl", "empty.json", "quote.csv")]
    rc, out, err = _run_cli(tmp_path, sources, capsys)
    assert rc == 0, err
    assert "Traceback" not in out + err
    assert "source 'empty' has no rows" in out
    summary = json.loads(out[out.index("{\n"):])
    assert summary["input"] == 3 + 2 + 2 + 4 + 0 + 2
    assert summary["quarantined"] == 1 + 1 + 1 + 3 + 0 + 1 and summary["kept"] == 6
    assert summary["accounting"]["ok"] and summary["empty_sources"] == ["empty"]
    quarantine = [json.loads(x) for x in open(summary["paths"]["quarantine"])]
    assert {(Path(q["file"]).name, q["row"]) for q in quarantine} == {
        ("nested.jsonl", "2"), ("long.csv", "3"), ("latin.csv", "3"), ("odd.jsonl", "1"), ("odd.jsonl", "2"),
        ("odd.jsonl", "3"), ("quote.csv", "2")}
    kept = [json.loads(x)["question"] for x in open(summary["paths"]["kept"])]
    assert kept == [Q[0], Q[1], Q[2], Q[3], Q[5], Q[8]]


def test_curate_run_refuses_a_fifo_and_a_broken_file_in_one_line(ray_local, tmp_path, capsys):
    (tmp_path / "ok.jsonl").write_bytes(jl(good(0)))
    os.mkfifo(tmp_path / "pipe.jsonl")
    rc, out, err = _run_cli(tmp_path, [{"name": "ok", "path": str(tmp_path / "ok.jsonl")},
                                       {"name": "pipe", "path": str(tmp_path / "pipe.jsonl")}], capsys, "fifo")
    assert rc == 1 and "pipe.jsonl is a FIFO" in err and "Traceback" not in err
    (tmp_path / "bad.parquet").write_bytes(parquet_bytes(pa.table({"question": Q}))[:-30])
    rc, out, err = _run_cli(tmp_path, [{"name": "ok", "path": str(tmp_path / "ok.jsonl")},
                                       {"name": "bad", "path": str(tmp_path / "bad.parquet")}], capsys, "pq")
    assert rc == 1 and "bad.parquet" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
