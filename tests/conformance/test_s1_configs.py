"""Conformance: the example configs that claim to be s1's use s1's curation, selection and
training settings throughout, and load (the first line of each names the command).

What each setting means, and the s1 file it follows, is in the README's "Fidelity to s1"
table and the other tests of this folder.
"""

import importlib
from pathlib import Path

import pytest

from s1ray.cli import COMMANDS
from s1ray.config import load_config

CONFIGS = Path(__file__).parents[2] / "jobs" / "configs"
S1_CONFIGS = sorted({p for p in CONFIGS.glob("*.yaml") if "_s1" in p.name or "32b" in p.name})


def _load(path: Path):
    first = path.read_text().splitlines()[0].split()
    assert first[:2] == ["#", "s1ray"], f"{path.name}: first line must be the s1ray command"
    module, cls = COMMANDS[first[2]][0].split(":")
    return first[2], load_config(getattr(importlib.import_module(module), cls), path)


def _check_curate(cfg):
    assert cfg.quality.rules == "s1" and cfg.decontam.rule == "s1" and cfg.decontam.n == 8
    if cfg.scoring is not None and cfg.scoring.difficulty.solvers:
        d = cfg.scoring.difficulty
        assert d.filter == "any" and d.ungraded == "drop"
        for s in d.solvers:
            assert s.prompt == "{question}" and s.choice_prompt == "{question}"


def _check_select(cfg):
    assert cfg.criterion == "s1" and cfg.size == 1000
    p = cfg.params
    assert (p.uniform_fraction, p.gpqa_weight, p.math_min_tokens) == (0.7, 0.5, 5600)


def _check_train(cfg):
    assert cfg.delimiters.format == "s1" and cfg.loss_reduction == "example_mean"
    assert cfg.batching != "pack" and cfg.micro_batch_size == 1 and cfg.global_batch_size == 16


def test_there_are_s1_configs():
    names = {p.name for p in S1_CONFIGS}
    assert {"curate_s1_59k.yaml", "select_s1k.yaml", "train_s1_qwen32b.yaml", "pipeline_s1_32b.yaml"} <= names


@pytest.mark.parametrize("path", S1_CONFIGS, ids=lambda p: p.name)
def test_s1_config_uses_s1_settings(path):
    command, cfg = _load(path)
    if command == "curate":
        _check_curate(cfg)
    elif command == "select":
        _check_select(cfg)
    elif command == "train":
        _check_train(cfg)
    elif command == "pipeline":
        _check_curate(cfg.curate)
        _check_select(cfg.select)
        _check_train(cfg.train)
    elif command == "sweep":
        _check_train(cfg.train)
        assert "s1" in cfg.space.criteria
