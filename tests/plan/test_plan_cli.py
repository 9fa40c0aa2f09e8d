"""`s1ray plan` on the shipped configs, and `s1ray train` refusing a run predicted not to fit."""

from __future__ import annotations

import json

import pytest

from s1ray import cli


def _json(out: str) -> dict:
    return json.loads(out[out.index("{"):])


def test_plan_prints_components_phases_time_and_fixes(capsys):
    assert cli.main(["plan", "--config", "train_s1_qwen32b", "--loss-impl", "full"]) == 0
    out = capsys.readouterr().out
    for text in ("activation checkpoints", "loss peak (full)", "communication buffers", "CUDA context",
                 "DOES NOT FIT", "MFU", "GPU-hours", "loss_impl=chunked", "block_size="):
        assert text in out, text


def test_plan_json_with_hardware_and_overrides(capsys):
    assert cli.main(["plan", "--config", "train_s1_qwen32b", "block_size=20000", "--gpu", "h200", "--gpus", "8",
                     "--loss-impl", "full", "--json"]) == 0
    plan = _json(capsys.readouterr().out)
    assert plan["hardware"]["name"] == "h200" and plan["setup"]["num_workers"] == 8
    assert plan["setup"]["block_size"] == 20000 and plan["fits"] is True
    assert plan["setup"]["gradient_accumulation"] == 2 and plan["steps"] == 315  # global batch 16 kept


def test_plan_takes_the_train_section_of_a_pipeline_config(capsys):
    assert cli.main(["plan", "--config", "pipeline_s1_32b", "train.block_size=4096", "--examples", "1000",
                     "--json"]) == 0
    plan = _json(capsys.readouterr().out)
    assert plan["section"] == "pipeline" and plan["setup"]["block_size"] == 4096 and plan["steps"] == 315


def test_plan_names_a_model_it_cannot_size(capsys):
    assert cli.main(["plan", "--config", "train_smollm2_local", "model=no-such/model"]) == 2
    assert "no-such/model" in capsys.readouterr().err


def test_train_refuses_a_predicted_oom_before_starting_and_force_overrides(monkeypatch, capsys):
    import s1ray.cluster
    import s1ray.train.trainer as trainer

    started = []
    monkeypatch.setattr(s1ray.cluster, "init_ray", lambda *a, **k: None)
    monkeypatch.setattr(trainer, "build_trainer", lambda *a, **k: started.append(1) or pytest.fail("started"))
    assert cli.main(["train", "--config", "train_s1_qwen32b"]) == 1  # full-logits loss at 32K
    err = capsys.readouterr().err
    assert "predicted not to fit" in err and "--force" in err and "DOES NOT FIT" in err and not started
    with pytest.raises(pytest.fail.Exception, match="started"):
        cli.main(["train", "--config", "train_s1_qwen32b", "--force"])
    assert started


def test_the_local_example_is_not_refused_on_this_machine():
    from s1ray.config import load_config
    from s1ray.configs import find_config
    from s1ray.plan import check_train
    from s1ray.train.config import TrainConfig

    cfg = load_config(TrainConfig, find_config("train_smollm2_local"))
    p = check_train(cfg)
    assert p is not None and p.fits and p.hardware.kind == "cpu"
