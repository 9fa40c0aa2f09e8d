"""``s1ray evaluate`` killed mid-way (SIGKILL of the driver) resumes from its saved parts:
finished tasks are not generated again and the outputs equal an uninterrupted run's."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path


spec = importlib.util.spec_from_file_location("resume_driver", Path(__file__).parents[1] / "io" / "resume_driver.py")
rd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rd)


def eval_config(tmp_path: Path, out: str) -> dict:
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)}) + "\n"
                             for i in range(4)))
    return {
        "ray": {"num_cpus": 2},
        "generation": {"model": "tiny:tiny", "batch_size": 4, "num_cpus": 0.5, "max_new_tokens": 32},
        "benchmarks": [{"name": "jsonl", "path": str(bench), "label": "tiny"}],
        "budgets": [2, 4], "methods": ["budget_forcing", "token_conditional"],
        "budget_forcing": {"max_answer_tokens": 3, "num_waits": 1},
        "bootstrap_samples": 50, "progress": False, "output_dir": str(tmp_path / out),
    }


def test_evaluate_killed_midway_resumes_without_regenerating(tmp_path, ray_tmp):
    marker, ref_marker = uuid.uuid4().hex, uuid.uuid4().hex

    # 1. Uninterrupted reference run. It runs beside step 2's job (its own Ray instance,
    #    RAY_TMPDIR and marker): independent jobs, started together.
    ref_cfg = eval_config(tmp_path, "ref")
    (ray_tmp / "ref").mkdir()
    ref_proc = rd.start_job("evaluate", ref_cfg, tmp_path, tmp_path / "calls-ref", -1, ray_tmp / "ref", ref_marker)
    try:
        # 2. Same config, other output dir: 2 of 4 batches pass the gate, then SIGKILL the driver
        #    once a part is on disk (the gate holds the rest, so the kill is always mid-way).
        cfg = eval_config(tmp_path, "run")
        out = Path(cfg["output_dir"])
        proc = rd.start_job("evaluate", cfg, tmp_path, tmp_path / "calls-1", 2, ray_tmp, marker)
        try:
            rd.wait_until(lambda: bool(list(out.glob("parts-*/part-*.jsonl"))), proc, "a saved part")
        finally:
            rd.kill_job(proc, marker)
        assert not rd.job_processes(marker)  # the killed driver's Ray cluster is gone too
    finally:
        rd.finish_job(ref_proc, tmp_path, tmp_path / "calls-ref", ref_marker)
    all_keys = rd.recorded(tmp_path / "calls-ref")
    assert len(all_keys) == len(set(all_keys)) == 4 * 2 * 2  # questions x methods x budgets
    assert not (out / "samples.jsonl").exists()
    parts = list(out.glob("parts-*"))
    assert len(parts) == 1
    saved = {json.loads(line)["_task"] for f in parts[0].glob("part-*.jsonl") for line in f.read_text().splitlines()}
    assert saved and saved < set(all_keys) and saved <= set(rd.recorded(tmp_path / "calls-1"))

    # 3. Re-run: exactly the tasks that were not saved are generated, each once.
    proc = rd.start_job("evaluate", cfg, tmp_path, tmp_path / "calls-2", -1, ray_tmp, marker)
    rd.finish_job(proc, tmp_path, tmp_path / "calls-2", marker)
    again = rd.recorded(tmp_path / "calls-2")
    assert sorted(again) == sorted(set(all_keys) - saved)
    err = (tmp_path / "calls-2.err").read_text()
    assert f"resuming: {len(saved)} of {len(all_keys)} tasks already done, {len(all_keys) - len(saved)} to go" in err

    # Outputs equal the uninterrupted run's (samples byte for byte; summary but for the clock).
    ref_out = Path(ref_cfg["output_dir"])
    assert (out / "samples.jsonl").read_text() == (ref_out / "samples.jsonl").read_text()
    ref_summary, summary = (json.loads((d / "summary.json").read_text()) for d in (ref_out, out))
    ref_summary.pop("seconds"), summary.pop("seconds")
    assert summary == ref_summary
    assert "_task" not in (out / "samples.jsonl").read_text()


def test_evaluation_key_follows_what_changes_generations(tmp_path):
    """Parts of another config live in another folder: only generation-relevant fields count."""
    from s1ray.evaluate.config import EvaluateConfig
    from s1ray.evaluate.runner import build_tasks, evaluation_key, parts_dir

    base = eval_config(tmp_path, "a")

    def key(**changes):
        raw = json.loads(json.dumps(base))
        for path, value in changes.items():
            node = raw
            *parents, last = path.split("__")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        cfg = EvaluateConfig.model_validate(raw)
        return evaluation_key(cfg, build_tasks(cfg)[0])

    same = key()
    for unchanged in ({"output_dir": str(tmp_path / "b")}, {"progress": True}, {"bootstrap_samples": 7},
                      {"generation__concurrency": 3}, {"generation__num_cpus": 0.25}, {"ray__num_cpus": 1},
                      {"generation__accelerator_type": "H100"}):
        assert key(**unchanged) == same, unchanged
    for changed in ({"generation__max_new_tokens": 33}, {"generation__batch_size": 2}, {"budgets": [2, 5]},
                    {"methods": ["budget_forcing"]}, {"budget_forcing__num_waits": 2}, {"seed": 1},
                    {"rejection__max_samples": 3}, {"token_conditional_prompt": "Use {budget} tokens."},
                    {"system_prompt": "Be brief."}, {"math_instruction": "Box it."}, {"uncapped_factor": 3.0},
                    {"grade_from": "answer"}):
        assert key(**changed) != same, changed
    bench = tmp_path / "bench.jsonl"  # same config, other benchmark content
    bench.write_text(bench.read_text().replace("What is 0 + 1?", "What is 0 + 2?"))
    cfg = EvaluateConfig.model_validate(base)
    assert evaluation_key(cfg, build_tasks(cfg)[0]) != same
    model = tmp_path / "model"  # a local model folder: re-written weights are another model
    model.mkdir()
    (model / "w.bin").write_bytes(b"1")
    cfg = EvaluateConfig.model_validate({**base, "generation": {**base["generation"], "model": str(model)}})
    before = evaluation_key(cfg, [])
    (model / "w.bin").write_bytes(b"22")
    assert evaluation_key(cfg, []) != before
    assert parts_dir(cfg, []).parent == tmp_path / "a"


def test_task_keys_tell_repeated_questions_apart():
    from s1ray.evaluate.runner import task_keys

    task = {"benchmark": "b", "id": "b/1", "method": "budget_forcing", "budget": 4}
    keys = task_keys([task, {**task, "budget": 8}, task])
    assert len(set(keys)) == 3 and json.loads(keys[2]) == ["b", "b/1", "budget_forcing", 4, 1]
