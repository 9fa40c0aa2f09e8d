"""Readers: every format, every preset (s1K- and s1K-1.1-shaped fixtures), quarantine, errors."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s1ray.io.readers import SourceConfig, SourceError, read_source

ROWS = [
    {"problem": "What is $1+1$?", "solution": "So $\\boxed{2}$.", "level": "Level 1"},
    {"problem": "What is $2+2$?", "solution": "It is $\\boxed{\\frac{8}{2}}$.", "level": "Level 2"},
]


def _read(path, preset="math", **kw):
    return read_source(SourceConfig(name="src", path=str(path), preset=preset, **kw))


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "csv", "hf_disk"])
def test_every_format_gives_the_same_records(tmp_path, fmt):
    if fmt == "jsonl":
        path = _jsonl(tmp_path / "d.jsonl", ROWS)
    elif fmt == "json":
        path = tmp_path / "d.json"
        path.write_text(json.dumps({"data": ROWS}))
    elif fmt == "parquet":
        path = tmp_path / "d.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    elif fmt == "csv":
        path = tmp_path / "d.csv"
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(ROWS[0]))
            w.writeheader()
            w.writerows(ROWS)
    else:
        import datasets

        path = tmp_path / "saved"
        datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    res = _read(path)
    assert res.n_rows == 2 and not res.quarantined
    assert [r["question"] for r in res.records] == [r["problem"] for r in ROWS]
    assert [r["answer"] for r in res.records] == ["2", "\\frac{8}{2}"]
    assert json.loads(res.records[0]["metadata"])["level"] == "Level 1"
    assert res.records[0]["origin"].startswith(str(path))


def test_hub_id_offline_fails_plainly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SourceError) as e:
        read_source(SourceConfig(name="s1k", hub_id="simplescaling/s1K-1.1", preset="s1k-1.1"))
    msg = str(e.value)
    assert "simplescaling/s1K-1.1" in msg and "offline" in msg and "save_to_disk" in msg


def test_s1k_preset(tmp_path):
    row = {"solution": "The answer is \\boxed{42}.", "question": "Compute the answer to everything.",
           "cot_type": "math", "source_type": "qq8933/AIME_1983_2024", "metadata": "{'year': 1999}",
           "cot": None, "thinking_trajectories": ["Let me think... 42."], "attempt": "42"}
    res = _read(_jsonl(tmp_path / "s1k.jsonl", [row]), preset="s1k")
    r = res.records[0]
    assert r["answer"] == "42" and r["thinking"] == ["Let me think... 42."] and r["attempt"] == "42"
    assert r["source_type"] == "qq8933/AIME_1983_2024" and r["cot_type"] == "math"
    assert json.loads(r["metadata"])["metadata"] == {"year": 1999}


def test_s1k11_preset_teacher_order(tmp_path):
    row = {"solution": "7", "question": "Find the number of days in a week.", "cot_type": "math",
           "source_type": "x", "metadata": "{}", "gemini_thinking_trajectory": "gemini thinks",
           "gemini_attempt": "7 (gemini)", "deepseek_thinking_trajectory": "deepseek thinks",
           "deepseek_attempt": "7 (deepseek)", "gemini_grade": "Yes", "gemini_grade_reason": "ok",
           "deepseek_grade": "No", "deepseek_grade_reason": "wrong format"}
    path = _jsonl(tmp_path / "s1k11.jsonl", [row])
    r = _read(path, preset="s1k-1.1").records[0]
    assert r["thinking"] == ["deepseek thinks"]  # one teacher's trace: s1's format joins all of a row's
    assert r["attempt"] == "7 (deepseek)" and r["attempt_correct"] is False and r["answer"] == "7"
    meta = json.loads(r["metadata"])
    assert meta["gemini_attempt"] == "7 (gemini)" and "deepseek_thinking_trajectory" not in meta
    assert meta["gemini_thinking_trajectory"] == "gemini thinks"
    g = _read(path, preset="s1k-1.1", teacher="gemini").records[0]
    assert g["thinking"] == ["gemini thinks"] and g["attempt_correct"] is True


def test_gsm8k_olympiad_multiple_choice_and_generic_presets(tmp_path):
    gsm = _read(_jsonl(tmp_path / "g.jsonl", [{"question": "Tom has 3 apples and buys 1,200 more. How many?",
                                               "answer": "3 + 1200 = 1203\n#### 1,203"}]), preset="gsm8k")
    assert gsm.records[0]["answer"] == "1203" and "####" in gsm.records[0]["solution"]
    oly = _read(_jsonl(tmp_path / "o.jsonl", [{"context": "Let $n=5$.", "question": "Find $n^2$.",
                                               "solution": ["Square it.", "$25$."], "final_answer": ["$25$"]}]),
                preset="olympiadbench")
    r = oly.records[0]
    assert r["question"] == "Let $n=5$.\n\nFind $n^2$." and r["answer"] == "$25$" and "Square it." in r["solution"]
    mc = _read(_jsonl(tmp_path / "m.jsonl", [{"question": "Which is a prime?", "choices": ["4", "6", "7", "9"],
                                              "answer": 2}]), preset="multiple_choice")
    assert mc.records[0]["choices"] == ["4", "6", "7", "9"] and mc.records[0]["answer"] == "C"
    gen = _read(_jsonl(tmp_path / "c.jsonl", [{"prompt": "Simplify $2x+3x$.", "answer": "$5x$", "topic": "alg"}]),
                preset="generic", columns={"question": "prompt", "domain": "topic"})
    assert gen.records[0]["question"] == "Simplify $2x+3x$." and gen.records[0]["domain"] == "alg"


def test_malformed_rows_are_quarantined_with_file_row_and_reason(tmp_path):
    good = {"problem": "What is $3+3$?", "solution": "$\\boxed{6}$"}
    lines = [json.dumps(good), '{"problem": "broken', json.dumps({"solution": "no question"}),
             json.dumps({"problem": {"nested": 1}, "solution": "x"}), json.dumps({"problem": "  \n ", "solution": "x"}),
             json.dumps({"problem": "y" * 40_000, "solution": "x"}), json.dumps([1, 2]),
             json.dumps({"question": "Which?", "choices": ["a"], "answer": 5})]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"problem": "caf\xe9"}\n')
    res = _read(path)
    assert res.n_rows == 9 and len(res.records) == 1 and len(res.quarantined) == 8
    by_row = {q["row"]: q["reason"] for q in res.quarantined}
    assert "bad JSON" in by_row["2"] and by_row["3"] == "missing question"
    assert "not text" in by_row["4"] and by_row["5"] == "empty question"
    assert "absurd length" in by_row["6"] and "not an object" in by_row["7"]
    assert "missing question" in by_row["8"] and "invalid UTF-8" in by_row["9"]
    assert all(q["file"] == str(path) and q["source"] == "src" for q in res.quarantined)
    mc = _read(path, preset="multiple_choice")  # wrong answer index for its choices
    assert any("out of range" in q["reason"] for q in mc.quarantined)


def test_unreadable_sources_raise_naming_the_file(tmp_path):
    with pytest.raises(SourceError, match="nope.jsonl"):
        _read(tmp_path / "nope.jsonl")
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match="broken.parquet"):
        _read(bad)
    j = tmp_path / "broken.json"
    j.write_text("{not json")
    with pytest.raises(SourceError, match="broken.json"):
        _read(j)
    with pytest.raises(SourceError, match="cannot tell the format"):
        _read(tmp_path / "data.xlsx")
    with pytest.raises(SourceError, match="unknown preset"):
        _read(_jsonl(tmp_path / "ok.jsonl", ROWS), preset="nosuch")
