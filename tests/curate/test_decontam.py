"""Decontamination: 8-gram overlap names the benchmark; short problems and boilerplate are handled."""

import json

import numpy as np
import pyarrow as pa

from s1ray.curate.config import CurateConfig, DecontamConfig
from s1ray.curate.decontam import build_index, decontam_features, find_contamination, score_decontam
from s1ray.io.readers import SourceConfig
from s1ray.records import make_record, to_table

BOILER = "Express your answer as a decimal to the nearest tenth."
EVAL = {
    "mini500": [
        "Simplify $\\sqrt{242}$.",  # 2 words: only the exact match can catch it
        "A bag has 4 red marbles and 6 blue marbles. Two marbles are drawn without replacement. "
        "What is the probability that both are red? " + BOILER,
        "The sum of two numbers is 22 and their difference is 4. What is the larger number? " + BOILER,
        "A cylinder has radius 3 and height 5. What is its volume? " + BOILER,
    ],
    "tinyaime": ["Find the number of ordered pairs of positive integers $(m,n)$ such that $m^2 n = 20^{20}$."],
}


def _table(questions):
    recs = [make_record(source="pool", origin=f"f:{i}", question=q) for i, q in enumerate(questions)]
    t = to_table(recs)
    return t.append_column("row_index", pa.array(range(len(recs)), pa.int64()))


def _flags(pool, cfg=None):
    cfg = cfg or DecontamConfig()
    index = build_index(EVAL, cfg)
    t = _table(pool)
    feats = decontam_features(t, index, cfg)
    found = find_contamination(feats, index, cfg, t.num_rows)
    return list(found["labels"]), found


def test_copied_problem_is_flagged_with_its_benchmark():
    pool = ["Sure! " + EVAL["mini500"][1].replace("Two marbles", "Then two marbles"),
            "Q: " + EVAL["tinyaime"][0],
            "A train leaves the station at 3 pm travelling at 60 miles per hour toward the coast."]
    labels, found = _flags(pool)
    assert labels == ["mini500", "tinyaime", ""]
    assert found["ngrams"][0] >= 5 and not found["exact"][0]
    # Only rows that match an evaluation n-gram reach the driver, keyed by an id hash, not the id.
    cfg = DecontamConfig()
    feats = decontam_features(_table(pool), build_index(EVAL, cfg), cfg)
    assert feats["row_index"].to_pylist() == [0, 1] and "id" not in feats.column_names


def test_short_eval_problem_caught_by_exact_normalized_match():
    pool = ["simplify   $\\sqrt{242}$", "Simplify $\\sqrt{243}$."]
    labels, found = _flags(pool)
    assert labels == ["mini500", ""]
    assert list(found["exact"]) == [True, False]
    labels_off, _ = _flags(pool, DecontamConfig(exact_match=False))
    assert labels_off == ["", ""]  # plain n-gram overlap misses it


def test_boilerplate_alone_does_not_flag():
    # The boilerplate is in 3 of the 4 mini500 problems (> max_eval_df=2): common phrasing.
    pool = [f"A rope is {k} meters long and is cut into 7 equal pieces. How long is each piece? {BOILER}"
            for k in range(3)]
    labels, found = _flags(pool)
    assert labels == ["", "", ""]
    assert found["n_common"]["eval"] > 0
    plain = DecontamConfig(max_eval_df=10**9, max_pool_df=10**9)
    assert _flags(pool, plain)[0] == ["mini500"] * 3  # without the rule: all flagged


def test_phrase_common_in_the_pool_does_not_count():
    phrase = "find the number of ordered pairs of positive integers"
    pool = [f"{phrase} $(a,b)$ with $a + b = {k}$." for k in range(10, 16)]
    labels, found = _flags(pool)
    assert labels == [""] * 6 and found["n_common"]["pool"] >= 1
    labels_plain, _ = _flags(pool, DecontamConfig(max_pool_df=100))
    assert labels_plain == ["tinyaime"] * 6


def test_score_decontam_reads_eval_files(ray_local, tmp_path):
    path = tmp_path / "mini500.jsonl"
    path.write_text("".join(json.dumps({"problem": q, "solution": "\\boxed{1}"}) + "\n" for q in EVAL["mini500"]))
    cfg = CurateConfig(sources=[], batch_size=2,
                       eval_sets=[SourceConfig(name="mini500", path=str(path), preset="math")])
    t = _table([EVAL["mini500"][2], "Simplify $\\sqrt{242}$.", "What is 2+3 when written in words, in English?"])
    ds = ray_local.data.from_arrow([t.slice(0, 2), t.slice(2)])
    out = pa.concat_tables(ray_local.get(score_decontam(ds, cfg).to_arrow_refs())).sort_by("row_index")
    assert out["contam_benchmarks"].to_pylist() == ["mini500", "mini500", ""]
    assert np.array(out["contam_exact"].to_pylist()).tolist() == [True, True, False]


def test_templated_siblings_are_not_copies_of_each_other():
    """reasoning-gym style: every evaluation problem shares one template; a pool row with the same
    template and other numbers is a sibling exercise, not a copy; the same problem is still caught."""
    import pyarrow as pa

    from s1ray.curate.config import DecontamConfig
    from s1ray.curate.decontam import build_index, decontam_features, find_contamination
    from s1ray.records import make_record, to_table

    tpl = "State the final answer to the following arithmetic problem: {} ="
    evals = {"gym_eval": [tpl.format(e) for e in ("3 + 4", "12 - 5 + 9", "7 + 8 - 2 + 6", "40 - 13")]}
    pool = [tpl.format("1 + 5"), tpl.format("4 - 1 - 7"), tpl.format("12 - 5 + 9"),
            "Please state the final answer to the following arithmetic problem: 7 + 8 - 2 + 6 ="]
    cfg = DecontamConfig()
    index = build_index(evals, cfg)
    recs = [make_record(source="pool", origin=f"f:{i}", question=q) for i, q in enumerate(pool)]
    t = to_table(recs).append_column("row_index", pa.array(range(len(recs)), pa.int64()))
    labels = list(find_contamination(decontam_features(t, index, cfg), index, cfg, t.num_rows)["labels"])
    assert labels == ["", "", "gym_eval", "gym_eval"]


ZH_EVAL = {"zh_gsm": ["学校买了5箱粉笔，每箱有24盒，用了38盒，还剩多少盒？",
                      "一辆汽车每小时行驶60千米，从甲地到乙地用了3小时。甲乙两地相距多少千米？"]}


def test_chinese_copy_of_an_eval_question_is_caught():
    cfg = DecontamConfig()
    index = build_index(ZH_EVAL, cfg)
    pool = ["请回答：学校买了5箱粉笔，每箱有24盒，用了38盒，那么还剩多少盒？",  # reworded copy
            "一辆汽车每小时行驶60千米，从甲地到乙地用了3小时。甲乙两地相距多少千米？",  # verbatim
            "小明有15个苹果，他给了小红6个，又买了8个。小明现在有多少个苹果？"]  # clean
    t = _table(pool)
    found = find_contamination(decontam_features(t, index, cfg), index, cfg, t.num_rows)
    assert list(found["labels"]) == ["zh_gsm", "zh_gsm", ""]
    assert found["ngrams"][0] >= 5  # caught by n-grams, not only by the exact match
    # s1's rule splits on whitespace: a Chinese sentence is one "word" and has no 8-gram.
    s1 = DecontamConfig(rule="s1")
    index_s1 = build_index(ZH_EVAL, s1)
    assert list(find_contamination(decontam_features(t, index_s1, s1), index_s1, s1, t.num_rows)["labels"]) == ["", "", ""]
