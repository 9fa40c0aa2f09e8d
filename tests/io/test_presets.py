"""Common schemas by configuration: options in every usual shape, answers as letter/index/text,
questions assembled from several columns; bad rows quarantined naming the field."""

import csv
import json

import pytest
from pydantic import ValidationError

from s1ray.io.presets import choice_answer, parse_choices, split_labelled
from s1ray.io.readers import SourceConfig, read_source


def _read(tmp_path, rows, **kw):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return read_source(SourceConfig(name="src", path=str(path), **kw))


# Real-shaped rows: an MMLU-style dict of options, AQuA-RAT (labelled list, letter answer),
# MathQA (one lowercase labelled string), ARC (label/text lists), SVAMP (body + question).
MMLU_DICT = {"question": "Find the degree for the given field extension Q(sqrt(2), sqrt(3)) over Q.",
             "choices": {"A": "0", "B": "4", "C": "2", "D": "6"}, "answer": "B", "subject": "abstract_algebra"}
AQUA = {"question": "A car is being driven, in a straight line and at a uniform speed, towards the base of a "
                    "vertical tower. The top of the tower is observed from the car and, in the process, it takes "
                    "10 minutes for the angle of elevation to change from 45 to 60. After how much more time will "
                    "this car reach the base of the tower?",
        "options": ["A)5(√3 + 1)", "B)6(√3 + √2)", "C)7(√3 – 1)", "D)8(√3 – 2)", "E)None of these"],
        "rationale": "...", "correct": "A"}
MATHQA = {"Problem": "the banker ' s gain of a certain sum due 3 years hence at 10 % per annum is rs . 36 . "
                     "what is the present worth ?",
          "options": "a ) rs . 400 , b ) rs . 300 , c ) rs . 500 , d ) rs . 350 , e ) none of these",
          "correct": "a", "Rationale": "..."}
ARC = {"id": "Mercury_SC_415702", "question": "George wants to warm his hands quickly by rubbing them. Which skin "
       "surface will produce the most heat?", "choices": {"text": ["dry palms", "wet palms", "palms covered with oil",
       "palms covered with lotion"], "label": ["A", "B", "C", "D"]}, "answerKey": "A"}
SVAMP = {"ID": "chal-1", "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each "
         "pack", "Question": "How much do you have to pay to buy each pack?", "Equation": "( 76.0 - 25.0 )",
         "Answer": 51.0, "Type": "Subtraction"}


def test_options_as_a_letter_mapping_are_read(tmp_path):
    res = _read(tmp_path, [MMLU_DICT], preset="multiple_choice")
    assert not res.quarantined
    rec = res.records[0]
    assert rec["choices"] == ["0", "4", "2", "6"] and rec["answer"] == "B"
    assert json.loads(rec["metadata"]) == {"subject": "abstract_algebra"}


def test_labelled_option_lists_and_strings(tmp_path):
    res = _read(tmp_path, [AQUA], columns={"choices": "options", "answer": "correct"})
    assert res.records[0]["choices"] == ["5(√3 + 1)", "6(√3 + √2)", "7(√3 – 1)", "8(√3 – 2)", "None of these"]
    assert res.records[0]["answer"] == "A"
    res = _read(tmp_path, [MATHQA], columns={"question": "Problem", "choices": "options", "answer": "correct"})
    assert res.records[0]["choices"] == ["rs . 400", "rs . 300", "rs . 500", "rs . 350", "none of these"]
    assert res.records[0]["answer"] == "A"
    res = _read(tmp_path, [ARC], columns={"answer": "answerKey"})
    assert res.records[0]["choices"][1] == "wet palms" and res.records[0]["answer"] == "A"


def test_one_string_of_options_in_the_usual_shapes():
    assert split_labelled("A) 12 B) 15 C) 18 D) 21") == ["12", "15", "18", "21"]
    assert split_labelled("(A) $x=1$\n(B) $x=2$\n(C) no solution") == ["$x=1$", "$x=2$", "no solution"]
    assert split_labelled("A. 3 cm B. 4 cm") == ["3 cm", "4 cm"]
    # a label-like letter inside an option does not start a new one unless it is the next letter
    assert split_labelled("A) Plan A) is fine B) Plan D) is fine") == ["Plan A) is fine", "Plan D) is fine"]
    assert split_labelled("no labels here") is None


def test_options_in_several_columns(tmp_path):
    path = tmp_path / "mmlu.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "A", "B", "C", "D", "answer"])
        w.writerow(["What is the atomic number of carbon?", "4", "6", "12", "14", "B"])
    res = read_source(SourceConfig(name="mmlu", path=str(path), preset="multiple_choice",
                                   columns={"choices": ["A", "B", "C", "D"]}))
    assert res.records[0]["choices"] == ["4", "6", "12", "14"] and res.records[0]["answer"] == "B"


@pytest.mark.parametrize("answer,fmt,letter", [
    ("B", "auto", "B"), ("(c)", "auto", "C"), ("b", "letter", "B"), (1, "auto", "B"), ("1", "index", "B"),
    (1, "index1", "A"), (4.0, "index1", "D"), ("Ribosome", "auto", "B"), (" ribosome ", "text", "B"),
])
def test_answer_as_letter_index_or_option_text(tmp_path, answer, fmt, letter):
    row = {"question": "Which organelle makes proteins in the cell?", "choices": ["Nucleus", "Ribosome", "Vacuole",
                                                                                 "Lysosome"], "answer": answer}
    res = _read(tmp_path, [row], preset="multiple_choice", answer_format=fmt)
    assert not res.quarantined and res.records[0]["answer"] == letter


def test_bad_multiple_choice_rows_are_quarantined_naming_the_field(tmp_path):
    base = {"question": "Which organelle makes proteins in the cell?"}
    rows = [{**base, "choices": "Nucleus or Ribosome", "answer": "B"},
            {**base, "choices": {"A": "Nucleus", "C": "Ribosome"}, "answer": "A"},
            {**base, "choices": {"first": "Nucleus", "second": "Ribosome"}, "answer": "A"},
            {**base, "choices": ["Nucleus", "Ribosome"], "answer": "Golgi"},
            {**base, "choices": ["Nucleus", "Ribosome"], "answer": "5"},
            {**base, "choices": ["Nucleus", {"x": 1}], "answer": "A"},
            {**base, "choices": ["Nucleus", "Ribosome"], "answer": "Ribosome"}]
    res = _read(tmp_path, rows, preset="multiple_choice")
    reasons = [q["reason"] for q in res.quarantined]
    assert [q["row"] for q in res.quarantined] == ["1", "2", "3", "4", "5", "6"]
    assert "choices is one string without option labels" in reasons[0]
    assert "choices: option letters ['A', 'C'] do not run" in reasons[1]
    assert "choices is a mapping with keys ['first', 'second']" in reasons[2]
    assert "answer 'Golgi' is neither an option letter" in reasons[3]
    assert "answer index 5 out of range for 2 choices" in reasons[4]
    assert "choices[1] is a dict" in reasons[5]
    assert res.records[0]["answer"] == "B"
    with pytest.raises(Exception, match="not an option letter"):
        choice_answer("Ribosome", ["Nucleus", "Ribosome"], "letter")


def test_question_from_several_columns_by_template(tmp_path):
    rows = [SVAMP, {**SVAMP, "ID": "chal-2", "Body": None}, {k: v for k, v in SVAMP.items() if k != "Body"},
            {**SVAMP, "ID": "chal-4", "Body": ["not", "text"]}]
    res = _read(tmp_path, rows, question_template="{Body}. {Question}", columns={"answer": "Answer"})
    assert res.records[0]["question"] == ("Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars "
                                          "on each pack. How much do you have to pay to buy each pack?")
    assert res.records[0]["answer"] == "51.0"
    meta = json.loads(res.records[0]["metadata"])
    assert "Body" not in meta and "Question" not in meta and meta["Equation"] == "( 76.0 - 25.0 )"
    assert res.records[1]["question"] == ". How much do you have to pay to buy each pack?"  # null renders empty
    reasons = [q["reason"] for q in res.quarantined]
    assert [q["row"] for q in res.quarantined] == ["3", "4"]
    assert reasons[0].startswith("question_template: column 'Body' is missing")
    assert reasons[1] == "question_template: column 'Body' is a list, not text"


def test_passage_and_question_template(tmp_path):
    rows = [{"passage": "The table lists the heights of five students: 150, 152, 149, 160 and 155 cm.",
             "question": "What is the median height?", "answer": "152"}]
    res = _read(tmp_path, rows, question_template="{passage}\n\n{question}")
    assert res.records[0]["question"].split("\n\n") == [rows[0]["passage"], rows[0]["question"]]


@pytest.mark.parametrize("template,message", [("{passage", "expected '}'"), ("{}", "must name a column"),
                                              ("no fields", "names no column")])
def test_bad_templates_fail_at_config_time(template, message):
    with pytest.raises(ValidationError, match=message):
        SourceConfig(name="src", path="x.jsonl", question_template=template)


def test_parse_choices_keeps_plain_lists_and_numbered_mappings():
    assert parse_choices(["x = 1", "x = 2"]) == ["x = 1", "x = 2"]
    assert parse_choices({"1": "one", "2": "two", "3": "three"}) == ["one", "two", "three"]
    assert parse_choices('["a", "b"]') == ["a", "b"]
    assert parse_choices(None) is None
