"""``s1ray <command> --config FILE [key=value ...]``: one typed config and one run function per command."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Callable

from s1ray.config import ConfigError, dump_config, load_config

# command -> ("module:ConfigClass", "module:run_function", help). Imported lazily so that
# `s1ray --help` does not import Ray, torch or DeepSpeed.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "curate": ("s1ray.curate.config:CurateConfig", "s1ray.curate.pipeline:run_curate",
               "read sources, score with rules and models, write the scored pool"),
    "select": ("s1ray.curate.selection:SelectConfig", "s1ray.curate.selection:run_select",
               "select a subset (s1 = what built s1K, algorithm1, random, diverse, longest, difficulty) from a scored pool"),
    "train": ("s1ray.train.config:TrainConfig", "s1ray.train.trainer:run_train",
              "supervised fine-tuning on Ray Train with DeepSpeed ZeRO"),
    "evaluate": ("s1ray.evaluate.config:EvaluateConfig", "s1ray.evaluate.runner:run_evaluate",
                 "budget-forced evaluation on benchmarks"),
    "sweep": ("s1ray.sweep:SweepConfig", "s1ray.sweep:run_sweep",
              "Ray Tune sweep over subset size and selection criteria"),
    "pipeline": ("s1ray.pipeline:PipelineConfig", "s1ray.pipeline:run_pipeline",
                 "curate -> select -> train -> evaluate -> report, chained through storage"),
}


def _import(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s1ray", description="The s1 recipe on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", "-c", help="YAML config file")
        p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=2e-5")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_ref, run_ref, _ = COMMANDS[args.command]
    try:
        cfg = load_config(_import(config_ref), args.config, args.overrides)
    except ConfigError as e:
        print(f"s1ray {args.command}: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(cfg))
        return 0
    run: Callable[[Any], dict[str, Any]] = _import(run_ref)
    summary = run(cfg)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
