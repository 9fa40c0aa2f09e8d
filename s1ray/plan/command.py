"""``s1ray plan --config FILE [key=value ...] [--gpu h100-80gb --gpus 16 --gpus-per-node 8] [--json]``.

Takes a train config, a pipeline config (its train section) or a sweep config (the train
section one trial runs), resolved like every other command (file or packaged example name,
dotted overrides).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from s1ray.config import ConfigError, load_config, load_yaml


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, help="train, pipeline or sweep config (file or example name)")
    p.add_argument("--gpu", choices=["h100-80gb", "h200", "a100-80gb", "cpu"],
                   help="device type (default: the config's: its GPU workers as the cluster advertises them, "
                        "else h100-80gb; use_gpu: false = this machine's CPUs and RAM)")
    p.add_argument("--gpus", type=int, help="devices in all (default: the config's num_workers)")
    p.add_argument("--gpus-per-node", type=int, help="devices per node (default 8 for GPUs; CPU: all on this machine)")
    p.add_argument("--examples", type=int, help="training examples (default: counted from the data where it can be)")
    p.add_argument("--mean-tokens", type=float,
                   help="mean tokens per example, for time (default: block_size, an upper bound)")
    p.add_argument("--loss-impl", choices=["full", "chunked", "liger"], help="plan with this loss implementation")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. block_size=20000")
    from s1ray.plan.sweep import add_sweep_arguments

    add_sweep_arguments(p)  # options for sweep configs (s1ray.plan.sweep)


def train_section(path: str, overrides: list[str]) -> tuple[Any, str]:
    """The TrainConfig to plan and what it came from ("train", "pipeline" or "sweep")."""
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys")
    if "space" in data:
        from s1ray.sweep import SweepConfig

        return load_config(SweepConfig, path, overrides).train, "sweep"
    if "train" in data and any(k in data for k in ("curate", "select", "evaluate", "stages")):
        from s1ray.pipeline import PipelineConfig

        return load_config(PipelineConfig, path, overrides).train, "pipeline"
    from s1ray.train.config import TrainConfig

    return load_config(TrainConfig, path, overrides), "train"


def plan_command(args: argparse.Namespace, config_path: str) -> int:
    from s1ray.plan.planner import hardware_for, plan_train
    from s1ray.plan.report import format_plan
    from s1ray.plan.shapes import PlanError
    from s1ray.plan.sweep import is_sweep_config, sweep_plan_command

    if is_sweep_config(config_path):  # the whole sweep: every trial's training and evaluation
        return sweep_plan_command(args, config_path)
    try:
        cfg, kind = train_section(config_path, args.overrides)
        hw = hardware_for(cfg, args.gpu, args.gpus, args.gpus_per_node)
        p = plan_train(cfg, hw, n_examples=args.examples, mean_tokens=args.mean_tokens, loss_impl=args.loss_impl)
    except (ConfigError, PlanError) as e:
        print(f"s1ray plan: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"config": config_path, "section": kind, **p.as_dict()}, indent=2, default=str))
    else:
        if kind != "train":
            print(f"(the {kind} config's train section{', one trial' if kind == 'sweep' else ''})")
        print(format_plan(p))
    return 0
