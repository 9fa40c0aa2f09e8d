"""The whole pipeline end to end at toy sizes: packaged data -> curate -> select -> train -> evaluate -> report.

Same code path as `s1ray pipeline --config jobs/configs/pipeline_local.yaml`, with a tiny
random model instead of SmolLM2 so it runs in CI time.
"""

import json
from pathlib import Path

import yaml

from s1ray.config import load_config
from s1ray.pipeline import PipelineConfig, run_pipeline

CONFIG = """
packaged_data:
  - {name: champ, source: champ}
  - {name: gym, source: reasoning_gym, options: {per_task: 2, seed: 0, tasks: [basic_arithmetic, gcd, lcm]}}
  - {name: gym_eval, source: reasoning_gym, options: {per_task: 2, seed: 1000, tasks: [basic_arithmetic, gcd]}}
curate:
  sources:
    - {name: champ, path: "{output_dir}/data/champ.jsonl", preset: generic, limit: 16,
       columns: {thinking: solution, attempt: worked_attempt}}
    - {name: gym, path: "{output_dir}/data/gym.jsonl", preset: generic}
  eval_sets:
    - {name: gym_eval, path: "{output_dir}/data/gym_eval.jsonl", preset: generic}
  quality: {require: [answer]}
  scoring:
    traces: {enabled: true, teacher: {model: "tiny:tiny", max_new_tokens: 8, batch_size: 8, num_cpus: 0.5},
             max_attempts: 1}
    lengths: {tokenizer: "packaged:smollm2-135m-instruct"}
    domains: {method: embedding}
    difficulty:
      solvers: [{name: tiny, generation: {model: "tiny:tiny", max_new_tokens: 8, batch_size: 8, num_cpus: 0.5}}]
select: {criterion: s1, size: 8, seed: 0}
train:
  model: tiny:tiny
  epochs: 1
  global_batch_size: 4
  block_size: 256
  num_workers: 1
  cpus_per_worker: 1
  deepspeed: {zero_stage: 2}
  metrics_every_steps: 1
evaluate:
  benchmarks: [{name: jsonl, path: "{output_dir}/data/gym_eval.jsonl", label: gym_eval}]
  budgets: [4, 8]
  budget_forcing: {max_answer_tokens: 4}
  generation: {backend: hf, batch_size: 4, num_cpus: 0.5}
  bootstrap_samples: 50
"""


def test_stages_are_connected_through_storage(tmp_path):
    cfg = load_config(PipelineConfig, None, [f"output_dir={tmp_path}"] +
                      [f"{k}={json.dumps(v)}" for k, v in yaml.safe_load(CONFIG).items()])
    assert cfg.select.input == f"{tmp_path}/curate/scored_pool.parquet"
    assert cfg.train.data.path == f"{tmp_path}/select/subset.parquet" and cfg.train.data.preset == "s1k"
    assert cfg.evaluate.generation.model == cfg.train.output_dir == f"{tmp_path}/model"
    assert cfg.curate.sources[0].path == f"{tmp_path}/data/champ.jsonl"


def test_pipeline_end_to_end(tmp_path, ray_local, capsys):
    path = tmp_path / "pipeline.yaml"
    path.write_text(CONFIG)
    out = tmp_path / "run"
    cfg = load_config(PipelineConfig, path, [f"output_dir={out}"])
    result = run_pipeline(cfg)

    summary = json.loads((out / "pipeline_summary.json").read_text())
    curate = summary["curate"]
    assert curate["accounting"]["ok"]
    assert curate["input"] == 16 + 6  # 16 CHAMP rows (limit) + 3 gym tasks x 2
    assert curate["input"] == curate["kept"] + sum(curate["dropped"].values()) + curate["quarantined"]
    assert summary["select"]["size"] == min(8, curate["kept"])
    subset = Path(summary["select"]["paths"]["parquet"])
    assert subset.exists()

    model_dir = Path(summary["train"]["model_dir"])
    from transformers import AutoModelForCausalLM
    assert AutoModelForCausalLM.from_pretrained(model_dir) is not None

    samples = [json.loads(line) for line in open(summary["evaluate"]["paths"]["samples"])]
    assert len(samples) == 4 * 2  # 2 tasks x 2 questions, 2 budgets
    assert all(s["thinking_tokens"] <= s["budget"] for s in samples)

    report = Path(result["report"]).read_text()
    for heading in ("Curation funnel", "Selection", "Training", "Evaluation"):
        assert heading in report
    assert (out / "training_curve.png").exists()
    printed = capsys.readouterr().out
    assert "s1ray pipeline finished" in printed and str(out / "report.md") in printed
