"""How the pipeline chains its stages through storage. The whole pipeline end to end at toy size
(packaged data -> curate -> select -> train -> evaluate -> report) runs as the example config
`pipeline_local` does, in tests/jobs/test_example_configs.py, with its outputs checked there.
"""

import json

import yaml

from s1ray.config import load_config
from s1ray.pipeline import PipelineConfig

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
