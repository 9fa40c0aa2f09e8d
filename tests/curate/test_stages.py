"""The stage contract: the stage list alone drives the config, the funnel, the cache and the
column docs; the smallest stage written that way (script) works end to end; no import circle."""

import ast
import json
from pathlib import Path

import pyarrow as pa
import pytest

from s1ray.curate import funnel
from s1ray.curate.config import CurateConfig
from s1ray.curate.script import ScriptConfig, script_columns, script_verdict
from s1ray.curate.stages import STAGES

ROOT = Path(__file__).resolve().parents[2] / "s1ray"


def test_the_stage_list_drives_config_funnel_and_columns():
    from s1ray.curate.pipeline import pool_columns

    names = [s.name for s in STAGES]
    assert [n for n in CurateConfig.model_fields if n in names] == names  # one section per stage, in order
    assert funnel.STAGE_ORDER == tuple(v for s in STAGES for v in s.drop_stages)
    cols = pool_columns()
    for stage in STAGES:
        assert all(c in cols and cols[c].startswith(stage.name) for c in stage.columns)
    cfg = CurateConfig.model_validate({"sources": [{"name": "a", "path": "x.jsonl"}]})
    assert [s.name for s in STAGES if s.enabled(cfg)] == [n for n in names if n != "scoring"]  # optional: absent


def test_verdicts_come_from_each_stage_and_earlier_stages_win():
    cfg = CurateConfig.model_validate({"sources": [{"name": "a", "path": "x.jsonl"}], "script": {"allow": ["latin"]}})
    batch = pa.table({"q_words": [1, 12, 12, 12], "dup_kind": ["", "exact", "", ""],
                      "contam_benchmarks": ["", "", "", "math500"], "script": ["han", "latin", "han", "latin"],
                      "flag_api_error": [False] * 4, "flag_asy": [False] * 4, "flag_missing_figure": [False] * 4,
                      "flag_numbering": [False] * 4, "source": ["a"] * 4,
                      **{f"has_{f}": [True] * 4 for f in ("thinking", "attempt", "answer", "solution",
                                                           "answer_or_solution")},
                      "source_type": ["a"] * 4})
    stage, reason = funnel.drop_reasons(batch, cfg)
    assert stage.tolist() == ["quality", "dedup", "script", "decontam"]
    assert reason.tolist() == ["too_short", "exact_duplicate", "script:han", "contaminated:math500"]


def test_script_of_each_question():
    batch = script_columns(pa.table({"question": ["小明有5个苹果，吃了2个，还剩几个？", "How many primes are below 20?",
                                                  "Сколько будет 2+2?", "$2+2=?$", None]}))
    assert batch["script"].to_pylist() == ["han", "latin", "cyrillic", "none", "none"]
    assert batch["script_share"].to_pylist()[0] == pytest.approx(1.0)
    keep_all = script_verdict(batch, ScriptConfig())[0][1]
    assert (keep_all == "").all()
    only_latin = script_verdict(batch, ScriptConfig(allow=["latin"]))[0][1]
    assert only_latin.tolist() == ["script:han", "", "script:cyrillic", "", ""]  # formulas always kept


def test_script_stage_in_a_curate_run(tmp_path, ray_local):
    from s1ray.curate.pipeline import run_curate

    rows = [{"question": "小明有5个苹果，吃了2个，还剩几个苹果呢？", "answer": "3"},
            {"question": "How many apples are left if Tom eats 2 of his 5 apples?", "answer": "3"},
            {"question": "Сколько яблок останется, если Том съест 2 из 5 яблок?", "answer": "3"}]
    src = tmp_path / "mixed.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cfg = CurateConfig.model_validate({"sources": [{"name": "mixed", "path": str(src)}],
                                       "output_dir": str(tmp_path / "out"), "script": {"allow": ["latin", "han"]},
                                       "quality": {"min_words": 1}, "plot": False})
    summary = run_curate(cfg)
    assert summary["accounting"]["ok"] and summary["kept"] == 2
    assert summary["reasons"]["script"] == {"script:cyrillic": 1}
    assert summary["stages"]["script"]["status"] == "computed"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every s1ray module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("s1ray"):
            found |= {node.module} & modules
            found |= {f"{node.module}.{a.name}" for a in node.names} & modules
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names} & modules
    return found


def test_no_import_circle_in_the_package():
    files = {".".join(f.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__"): f
             for f in ROOT.rglob("*.py")}
    graph = {m: _imports(f, set(files)) - {m} for m, f in files.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert len(graph) > 30  # the package was found
