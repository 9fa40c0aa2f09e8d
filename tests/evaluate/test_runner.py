"""``s1ray evaluate`` end to end with a tiny model on Ray Data: samples, summary, table, plot."""

from __future__ import annotations

import json

import yaml

from s1ray.cli import main


def test_evaluate_cli_end_to_end(ray_local, tmp_path, capsys):
    bench = tmp_path / "tiny_bench.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "What is 1+1?", "answer": "2"},
        {"question": "What is 2+3?", "answer": "5"},
        {"question": "Pick the even number.", "answer": "B", "choices": ["3", "4", "5"]},
        {"question": "A row without a reference answer"},
    ]))
    out = tmp_path / "out"
    cfg = {
        "generation": {"model": "tiny:tiny", "batch_size": 6, "num_cpus": 0.5, "max_new_tokens": 64},
        "benchmarks": [{"name": "jsonl", "path": str(bench), "label": "tiny"}],
        "budgets": [2, 5],
        "methods": ["budget_forcing", "token_conditional", "rejection_sampling"],
        "budget_forcing": {"max_answer_tokens": 3, "num_waits": 1},
        "rejection": {"max_samples": 2},
        "bootstrap_samples": 100, "progress": False, "output_dir": str(out),
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", "--config", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["paths"]) >= {"samples", "summary_json", "summary_md", "plot"}

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * 3 * 2  # questions x methods x budgets
    for s in samples:
        assert {"prompt", "generation", "thinking_tokens", "forced_stop", "continuations", "extracted",
                "correct", "answer", "grade_reason"} <= set(s)
        assert s["answer_tokens"] > 0  # the answer phase always ran
        if s["method"] == "budget_forcing":
            assert s["thinking_tokens"] <= s["budget"] and s["forced_stop"]
        else:  # baselines are not cut at the budget (the tiny model never stops by itself)
            assert s["thinking_tokens"] > s["budget"]
    assert {s["kind"] for s in samples} == {"math", "choice"}

    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmarks"]["tiny"] == {"rows": 4, "questions": 3, "quarantined": 1,
                                             "quarantine_examples": [summary["benchmarks"]["tiny"]
                                                                     ["quarantine_examples"][0]]}
    metrics = summary["metrics"]["tiny"]
    assert metrics["budget_forcing"]["control"] == 1.0
    assert metrics["token_conditional"]["control"] == 0.0
    assert [b["avg_thinking_tokens"] for b in metrics["budget_forcing"]["budgets"]] == [2.0, 5.0]
    rejected = [s for s in samples if s["method"] == "rejection_sampling"]
    assert all(s["draws"] == 2 for s in rejected)  # never fits: every draw used
    md = (out / "summary.md").read_text()
    assert "| tiny | budget_forcing | 2 | 3 |" in md and "Performance" in md
    png = (out / "scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_evaluate_vllm_rows_that_fill_a_small_context_are_counted(ray_local, tmp_path, capsys):
    """Issue 21: SmolLM2 on vLLM at max_model_len 256 with a 400-token budget and a Wait used to
    exit 1 (VLLMValidationError: a row at the context was sent again). Now such rows are cut at
    the context, answer, and are counted as context stops."""
    bench = tmp_path / "math.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  Enter your "
                     "answer in the form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$",
         "answer": "\\left( 3, \\frac{\\pi}{2} \\right)"},
        {"question": "Define\n\\[p = \\sum_{k = 1}^\\infty \\frac{1}{k^2} \\quad \\text{and} \\quad q = "
                     "\\sum_{k = 1}^\\infty \\frac{1}{k^3}.\\]Find a way to write\n\\[\\sum_{j = 1}^\\infty "
                     "\\sum_{k = 1}^\\infty \\frac{1}{(j + k)^3}\\]in terms of $p$ and $q.$", "answer": "p - q"},
    ]))
    out = tmp_path / "out"
    cfg = {
        "generation": {"backend": "vllm", "model": "packaged:smollm2-135m-instruct", "dtype": "bfloat16",
                       "batch_size": 2, "num_cpus": 1, "engine_kwargs": {"max_model_len": 256}},
        "benchmarks": [{"name": "jsonl", "path": str(bench), "label": "math"}],
        "budgets": [400],
        "budget_forcing": {"num_waits": 1, "max_answer_tokens": 16},
        "bootstrap_samples": 10, "progress": False, "output_dir": str(out),
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", "--config", str(path)]) == 0
    capsys.readouterr()
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    at_limit = [s for s in samples if s["stop_reason"] == "context"]
    assert at_limit, [(s["stop_reason"], s["thinking_tokens"]) for s in samples]
    for s in at_limit:
        assert s["forced_stop"] and s["error"] is None and s["answer_tokens"] > 0
        assert "Final Answer:" in s["generation"] and s["thinking_tokens"] < 256
    point = json.loads((out / "summary.json").read_text())["metrics"]["math"]["budget_forcing"]["budgets"][0]
    assert point["context_stops"] == len(at_limit) and point["forced_stops"] >= len(at_limit)
    assert "(%d)" % len(at_limit) in (out / "summary.md").read_text()
