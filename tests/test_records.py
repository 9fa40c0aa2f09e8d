"""The canonical record: schema, ids from normalized text, digits kept."""

import json

import pyarrow as pa

from s1ray.records import COLUMNS, SCHEMA, make_record, normalize_text, primary_thinking, question_id, to_table


def test_normalize_ignores_case_space_and_latex_spacing_but_keeps_digits():
    a = "Solve  $x + 1 = 2$ for   X."
    assert normalize_text(a) == normalize_text("solve $x+1=2$ for x")
    assert normalize_text("$\\left( x \\right)\\,\\dfrac{1}{2}$") == normalize_text("$(x)\\frac{1}{2}$")
    assert normalize_text("Compute 12 + 3") != normalize_text("Compute 12 + 4")


def test_question_id_is_stable_and_normalized():
    assert question_id("What is 2+2?") == question_id("  what is 2 + 2?")
    assert question_id("What is 2+2?") != question_id("What is 2+3?")
    assert len(question_id("x")) == 16


def test_make_record_and_table_follow_the_schema():
    rec = make_record(source="s", question="Q?", origin="f:1", thinking=["t1", "t2"], metadata={"level": 5})
    assert list(rec) == COLUMNS and rec["source_type"] == "s"
    assert json.loads(rec["metadata"]) == {"level": 5}
    table = to_table([rec, make_record(source="s", question="R?", origin="f:2")])
    assert table.schema == SCHEMA and table.num_rows == 2
    assert table["thinking"].type == pa.list_(pa.string())


def test_primary_thinking():
    assert primary_thinking({"thinking": ["a", "b"]}) == "a"
    assert primary_thinking({"thinking": None}) == "" and primary_thinking({}) == ""
