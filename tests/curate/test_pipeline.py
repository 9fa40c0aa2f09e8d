"""run_curate end to end on small fixtures: outputs, accounting over malformed rows, stage reuse."""

import csv
import json

import pandas as pd
import pytest

from s1ray.curate.config import CurateConfig
from s1ray.curate.pipeline import pool_columns, run_curate
from s1ray.io.readers import SourceError

MATH500 = ["Simplify $\\sqrt{242}$.",
           "How many vertical asymptotes does the graph of $y=\\frac{2}{x^2+x-6}$ have?"]


def _write_fixtures(d):
    math_rows = [
        {"problem": MATH500[1], "solution": "There are $\\boxed{2}$."},  # contaminated (8-grams)
        {"problem": "Simplify $\\sqrt{242}$.", "solution": "$\\boxed{11\\sqrt2}$"},  # contaminated (exact, short)
        {"problem": "Find the area of the square shown.\n[asy]draw(unitsquare);[/asy]", "solution": "\\boxed{1}"},
        {"problem": "What is the smallest prime number greater than 50 that ends in 3?", "solution": "\\boxed{53}"},
        {"problem": "Seven?", "solution": "\\boxed{7}"},  # too short
        {"problem": "What is the largest prime number smaller than 50 that ends in 3?", "solution": "\\boxed{43}"},
    ]
    lines = [json.dumps(r) for r in math_rows]
    lines.insert(2, '{"problem": "broken json", ')  # bad JSON
    lines.append(json.dumps({"solution": "no question here"}))  # missing question
    lines.append(json.dumps({"problem": ["a", "list"], "solution": "x"}))  # wrong type
    lines.append(json.dumps({"problem": "   ", "solution": "x"}))  # empty text
    lines.append(json.dumps({"problem": "x" * 50_000, "solution": "x"}))  # absurd length
    raw = ("\n".join(lines) + "\n").encode() + b'{"problem": "bad \xff byte", "solution": "1"}\n'
    (d / "math.jsonl").write_bytes(raw)
    with open(d / "gsm.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["question", "answer"])
        w.writeheader()
        w.writerow({"question": "What is the smallest prime number greater than 50 that ends in 3?",
                    "answer": "It is 53.\n#### 53"})  # exact duplicate across sources
        w.writerow({"question": "what is the SMALLEST prime  number greater than 50 that ends in 3?",
                    "answer": "#### 53"})  # case/space duplicate
        w.writerow({"question": "Tom has 3 apples and buys 4 more apples at the shop. How many apples does he have?",
                    "answer": "#### 7"})
        w.writerow({"question": "Tom has 5 apples and buys 4 more apples at the shop. How many apples does he have?",
                    "answer": "#### 9"})  # number variant: stays
        w.writerow({"question": "Tom has 3 apples and buys 4 more apples at the store. How many apples does he have?",
                    "answer": "#### 7"})  # reworded: near duplicate
    (d / "math500.jsonl").write_text("".join(json.dumps({"problem": q, "solution": "\\boxed{1}"}) + "\n"
                                             for q in MATH500))


def _cfg(d, **kw):
    return CurateConfig.model_validate({
        "sources": [{"name": "math", "path": str(d / "math.jsonl"), "preset": "math"},
                    {"name": "gsm", "path": str(d / "gsm.csv"), "preset": "gsm8k"}],
        "eval_sets": [{"name": "math500", "path": str(d / "math500.jsonl"), "preset": "math"}],
        "output_dir": str(d / "out"), "batch_size": 4, "quality": {"min_words": 2}, **kw})


def test_run_curate_outputs_accounting_and_reuse(ray_local, tmp_path):
    _write_fixtures(tmp_path)
    s = run_curate(_cfg(tmp_path))
    assert s["input"] == 17 and s["quarantined"] == 6
    assert s["accounting"]["ok"] and s["accounting"]["kept_plus_dropped_plus_quarantined"] == 17
    assert s["reasons"]["quality"] == {"asy_diagram": 1, "too_short": 1}
    assert s["reasons"]["dedup"] == {"exact_duplicate": 2, "near_duplicate": 1}
    assert s["reasons"]["decontam"] == {"contaminated:math500": 2}
    assert s["kept"] == 4

    quarantine = [json.loads(x) for x in open(s["paths"]["quarantine"])]
    reasons = " | ".join(q["reason"] for q in quarantine)
    for why in ("bad JSON", "missing question", "not text", "empty question", "absurd length", "invalid UTF-8"):
        assert why in reasons
    assert all(q["file"].endswith("math.jsonl") and q["row"] for q in quarantine)

    pool = pd.read_parquet(s["paths"]["scored_pool"])
    assert len(pool) == 11 and list(pool.columns) == list(pool_columns())
    kept = [json.loads(x) for x in open(s["paths"]["kept"])]
    assert sorted(k["question"][:14] for k in kept) == sorted(pool[pool.keep].question.str[:14])
    variant = pool[pool.question.str.startswith("Tom has 5")]
    assert variant.keep.all()  # the number-changed variant survives dedup
    report = json.load(open(s["paths"]["report_json"]))
    assert report["accounting"]["ok"] and {r["source"] for r in report["sources"]} == {"math", "gsm"}
    assert "contaminated:math500" in open(s["paths"]["report_md"]).read()
    assert (tmp_path / "out" / "funnel.png").stat().st_size > 1000

    # Same config + inputs: every stage is reused and the results are identical; plot: false
    # writes no funnel.png.
    (tmp_path / "out" / "funnel.png").unlink()
    again = run_curate(_cfg(tmp_path, plot=False))
    assert "funnel_png" not in again["paths"] and not (tmp_path / "out" / "funnel.png").exists()
    assert {k: v["status"] for k, v in again["stages"].items()} == {
        "read": "reused", "quality": "reused", "dedup": "reused", "decontam": "reused", "script": "reused",
        "scoring": "disabled"}
    pd.testing.assert_frame_equal(pd.read_parquet(again["paths"]["scored_pool"]), pool)

    # A new threshold reuses the quality scores; a changed input file re-reads everything.
    tighter = run_curate(_cfg(tmp_path, quality={"min_words": 12}))
    assert tighter["stages"]["quality"]["status"] == "reused"
    assert tighter["stages"]["dedup"]["status"] == "computed"
    assert tighter["reasons"]["quality"]["too_short"] > 1 and tighter["accounting"]["ok"]
    with open(tmp_path / "gsm.csv", "a") as f:
        f.write('"A new question about seven prime numbers and their sum?","#### 1"\n')
    changed = run_curate(_cfg(tmp_path))
    assert changed["stages"]["read"]["status"] == "computed" and changed["input"] == 18


def test_unreadable_source_is_an_error_naming_it(ray_local, tmp_path):
    _write_fixtures(tmp_path)
    cfg = _cfg(tmp_path)
    cfg.sources[1].path = str(tmp_path / "missing.csv")
    with pytest.raises(SourceError, match="missing.csv"):
        run_curate(cfg)


def test_curate_data_context_keeps_order_and_drops_reservations_for_rule_stages_only(tmp_path):
    """Rule-only runs turn Ray Data's per-operator reservations off (they serialised the map tasks
    on 2 CPUs); runs with model stages keep them (their actor pools need the CPUs); the previous
    settings come back afterwards, also after an error."""
    import pytest
    import ray

    from s1ray.curate.pipeline import _data_context

    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order, ctx.op_resource_reservation_enabled
    assert before[1] is True  # Ray's default
    with pytest.raises(RuntimeError, match="boom"):
        with _data_context(_cfg(tmp_path)):
            assert ctx.execution_options.preserve_order and not ctx.op_resource_reservation_enabled
            raise RuntimeError("boom")
    assert (ctx.execution_options.preserve_order, ctx.op_resource_reservation_enabled) == before
    scored = _cfg(tmp_path, scoring={"lengths": {"tokenizer": "tiny:tiny"}, "domains": {"enabled": False}})
    with _data_context(scored):
        assert ctx.execution_options.preserve_order and ctx.op_resource_reservation_enabled
    assert (ctx.execution_options.preserve_order, ctx.op_resource_reservation_enabled) == before
