"""``s1ray <command> --config FILE [key=value ...]``: one typed config and one run function per command.

Also ``s1ray configs list`` / ``s1ray configs copy NAME [DEST]`` for the example configs that
ship inside the package (like torchtune's ``tune ls`` / ``tune cp``); ``--config NAME`` runs one
of them directly. Output is quiet by default (s1ray's own lines, Ray's warnings); ``--verbose``
shows everything Ray prints.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from s1ray.config import ConfigError, MissingFieldsError, dump_config, load_config
from s1ray.configs import example_configs, find_config

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

# command -> (example config, overrides) shown in `s1ray <command> --help`; tests/test_cli.py
# loads every one of them, so the help never shows an override that fails.
EXAMPLES: dict[str, tuple[str, str]] = {
    "curate": ("curate_shared_pool", "dedup.threshold=0.7 quality.min_words=5 output_dir=outputs/my_pool"),
    "select": ("select_shared_pool", "criterion=random size=10 seed=1"),
    "train": ("train_smollm2_local", "lr=2e-5 epochs=2 deepspeed.zero_stage=3"),
    "evaluate": ("evaluate_smollm2_math500", "benchmarks.0.limit=100 budgets=[64,256] generation.backend=hf"),
    "sweep": ("sweep_local", "space.sizes=[16,full] space.seeds=[0] train.lr=2e-5"),
    "pipeline": ("pipeline_local", "select.size=32 train.epochs=1 evaluate.budgets=[16,64]"),
}

OUTPUT_RULE = ("Outputs go under outputs/ in the directory you run from unless the config says otherwise "
               "(outputs/<command>, train: outputs/train/<run_name>, sweep: outputs/sweeps/<name>).")


def _import(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _epilog(name: str) -> str:
    example = f"example:\n  s1ray {name} --config {EXAMPLES[name][0]} {EXAMPLES[name][1]}\n\n" if name in EXAMPLES else ""
    return (f"{example}--config takes a file or the name of a packaged example (`s1ray configs list`).\n"
            f"Overrides are dotted keys; a number indexes a list (benchmarks.0.limit=100).\n{OUTPUT_RULE}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s1ray", description="The s1 recipe on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_epilog(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", "-c", help="YAML config file, or the name of a packaged example config")
        p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        p.add_argument("--verbose", "-v", action="store_true", help="show Ray's own INFO output and progress dumps")
        p.add_argument("overrides", nargs="*", metavar="key=value",
                       help=f"dotted overrides, e.g. {EXAMPLES.get(name, ('', 'key=value'))[1].split()[0]}")
        if name in ("train", "pipeline"):
            p.add_argument("--force", action="store_true",
                           help="train even when the memory plan (s1ray plan) predicts an out-of-memory error")
    plan = sub.add_parser("plan", help="per-GPU memory, step time, MFU, wall time and GPU-hours of a training config",
                          description="Predict a training run's per-device memory (by component and phase), step "
                                      "time, MFU, wall time and GPU-hours; when it does not fit, the settings that do.",
                          epilog="example:\n  s1ray plan --config train_s1_qwen32b block_size=20000\n"
                                 "  s1ray plan --config train_s1_qwen32b --gpu h200 --gpus 8 --json",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    from s1ray.plan.command import add_arguments

    add_arguments(plan)
    cfg = sub.add_parser("configs", help="list or copy the example configs shipped with s1ray",
                         description="The example configs installed with s1ray (package data).")
    cfg_sub = cfg.add_subparsers(dest="action", required=True)
    cfg_sub.add_parser("list", help="name, command and purpose of every example config")
    cp = cfg_sub.add_parser("copy", help="copy an example config to edit it")
    cp.add_argument("name", help="config name as `s1ray configs list` shows it (with or without .yaml)")
    cp.add_argument("dest", nargs="?", help="file or folder (default: ./NAME.yaml)")
    cp.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


def configs_command(args: argparse.Namespace) -> int:
    examples = example_configs()
    if args.action == "list":
        width = max(len(e.name) for e in examples)
        for e in examples:
            print(f"{e.name:<{width}}  {e.command}")
            if e.summary:
                print(f"{'':<{width}}  {e.summary}")
        return 0
    src = find_config(args.name)
    if src is None:
        print(f"s1ray configs copy: no example config named {args.name!r}; "
              f"`s1ray configs list` shows: {', '.join(e.name for e in examples)}", file=sys.stderr)
        return 2
    dest = Path(args.dest) if args.dest else Path(src.name)
    if dest.is_dir():
        dest = dest / src.name
    if dest.exists() and not args.force:
        print(f"s1ray configs copy: {dest} exists (use --force to overwrite)", file=sys.stderr)
        return 2
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    print(f"copied {src.stem} to {dest}")
    return 0


def resolve_config_path(value: str | None) -> str | None:
    """A file path as given, else a packaged example config of that name; None stays None."""
    if value is None or Path(value).expanduser().exists():
        return value
    found = find_config(value)
    return str(found) if found is not None else value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "configs":
        return configs_command(args)
    if args.command == "plan":
        from s1ray.plan.command import plan_command

        return plan_command(args, resolve_config_path(args.config))
    config_ref, run_ref, _ = COMMANDS[args.command]
    try:
        cfg = load_config(_import(config_ref), resolve_config_path(args.config), args.overrides)
    except MissingFieldsError as e:
        hint = ""
        if not args.config:
            example = EXAMPLES.get(args.command, ("NAME",))[0]
            hint = (f"\nno --config given: pass --config FILE (or an example name) with the keys above; "
                    f"`s1ray configs list` shows the examples, e.g. s1ray {args.command} --config {example}")
        print(f"s1ray {args.command}: {e}{hint}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"s1ray {args.command}: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(cfg))
        return 0
    from s1ray.logs import setup_logging

    setup_logging(verbose=args.verbose)
    run: Callable[[Any], dict[str, Any]] = _import(run_ref)
    from s1ray.curate.selection import SelectionError
    from s1ray.io.readers import SourceError

    try:
        summary = run(cfg, force=True) if getattr(args, "force", False) else run(cfg)
    except (ConfigError, SelectionError, SourceError) as e:  # input the run cannot use: one message, no traceback
        print(f"s1ray {args.command}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
