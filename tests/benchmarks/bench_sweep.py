"""Sweep overhead and ASHA savings, measured on one search space run twice.

1. Per-trial overhead outside training and evaluation, as a fraction of trial time:
   selection + data shipping (pool from the object store) + Tune start-up (gap between one
   trial ending and the next starting; trials run one at a time here) + Train start-up (fit
   start to the first optimizer step: worker group, data, model load, DeepSpeed init) +
   checkpoints + finish (last report to the end of the fit: upload, shut-down) + export.
   Training = the optimizer steps; evaluation = the in-training evaluations. Trials of two
   sizes (16 and 48 rows) show how the fixed overhead's share falls with trial length.
2. The trial time ASHA saves against the full grid on the same space (2 training stages with
   an intermediate evaluation after the first; learning rates include one too high, so some
   trials are visibly worse after stage 1), and whether both find the same best trial.

Model SmolLM2-135M-Instruct (packaged), pool and held-out evaluation as in demo_sweep.py.

    .venv/bin/python tests/benchmarks/bench_sweep.py --out /tmp/bench_sweep

Writes bench_sweep.json, both sweeps' trials.csv and bench_sweep.png to --out. The machine
is shared: other processes inflate every time here; the report says what the load was.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_sweep  # noqa: E402  (pool, evaluation set, environment)

import pandas as pd  # noqa: E402

from s1ray.sweep.analysis import STOPPED  # noqa: E402

OVERHEAD_PARTS = ["select_s", "ship_s", "tune_startup_s", "train_startup_s", "checkpoint_s", "finish_s", "export_s"]


def space(quick: bool) -> dict:
    return {"sizes": [16] if quick else [16, 48], "criteria": ["s1", "random"], "seeds": [0], "lr": [1e-4, 3e-3]}


def config(out: Path, pool: Path, ev: Path, name: str, asha: bool, quick: bool) -> dict:
    cfg = demo_sweep.sweep_config(out, pool, ev, name, quick)
    cfg.update(space=space(quick), stages=2, asha={"enabled": asha, "grace_period": 1, "reduction_factor": 2},
               resume=False, max_concurrent_trials=1, intermediate_limit=None)
    cfg["train"].update(epochs=2, num_workers=1, cpus_per_worker=2, global_batch_size=4)
    cfg["evaluate"]["budgets"] = [32]
    return cfg


def per_trial(table: pd.DataFrame, fit_start: float) -> pd.DataFrame:
    """Overhead parts per completed/stopped trial; trials ran one at a time, in start order."""
    t = table[table["status"] != "failed"].sort_values("t_entry_unix").copy()
    prev_end = [fit_start] + list(t["t_end_unix"].iloc[:-1])
    t["tune_startup_s"] = t["t_entry_unix"].to_numpy() - pd.Series(prev_end).to_numpy()
    for part in ("select_s", "ship_s", "train_startup_s", "checkpoint_s", "finish_s", "export_s"):
        t[part] = t.get(f"t_{part}", pd.Series(0.0, index=t.index)).fillna(0.0)
    t["train_s"], t["eval_s"] = t["t_steps_s"], t["t_eval_s"]
    t["trial_s"] = t["t_trial_s"] + t["tune_startup_s"]
    t["overhead_s"] = t[OVERHEAD_PARTS].sum(axis=1)
    t["overhead_frac"] = t["overhead_s"] / t["trial_s"]
    t["unaccounted_s"] = t["trial_s"] - t["overhead_s"] - t["train_s"] - t["eval_s"]
    return t


def run(out: Path, name: str, asha: bool, pool: Path, ev: Path, quick: bool) -> tuple[dict, pd.DataFrame]:
    from s1ray.sweep.config import SweepConfig
    from s1ray.sweep.driver import run_sweep

    import shutil

    shutil.rmtree(out / "sweeps" / name, ignore_errors=True)  # a fresh sweep, never a restore
    cfg = SweepConfig.model_validate(config(out, pool, ev, name, asha, quick))
    t0 = time.time()
    summary = run_sweep(cfg)
    table = pd.read_csv(summary["trials_csv"])
    table.to_csv(out / f"{name}_trials.csv", index=False)
    return {**summary, "fit_start_unix": t0}, table


def train_floor(repeats: int = 3) -> dict:
    """The fixed cost of any Ray Train run here: a 1-worker TorchTrainer whose loop does nothing."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from s1ray.cluster import init_ray

    init_ray()

    def empty(config):
        return None

    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        TorchTrainer(empty, torch_config=TorchConfig(backend="gloo"),
                     scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 2}),
                     run_config=RunConfig(name=f"floor_{os.getpid()}_{i}", storage_path="/tmp/s1ray_bench_floor")).fit()
        times.append(time.perf_counter() - t0)
    ray.shutdown()
    return {"empty_fit_s": times, "empty_fit_s_median": sorted(times)[len(times) // 2]}


def plot(grid: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    left = pd.Series(0.0, index=grid.index)
    parts = OVERHEAD_PARTS + ["train_s", "eval_s"]
    for part in parts:
        ax.barh(grid["trial_id"], grid[part], left=left, label=part.removesuffix("_s"))
        left = left + grid[part]
    ax.set_xlabel("seconds")
    ax.set_title("Where a sweep trial's time goes (grid run)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="/tmp/bench_sweep")
    p.add_argument("--eval-questions", type=int, default=12)
    p.add_argument("--quick", action="store_true", help="one subset size (4 trials per sweep): a smoke run")
    p.add_argument("--only-floor", action="store_true", help="measure only the empty Ray Train run")
    args = p.parse_args(argv)
    if args.only_floor:
        print(json.dumps(train_floor(), indent=2))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool = demo_sweep.build_pool(n_chain=60, n_arith=60, n_gsm8k=120)
    pool_path = out / "scored_pool.parquet"
    pool.to_parquet(pool_path)
    ev = demo_sweep.build_eval(out / "eval.jsonl", args.eval_questions, pool)
    load_before = os.getloadavg()

    g_sum, g_tab = run(out, "bench_grid", False, pool_path, ev, args.quick)
    a_sum, a_tab = run(out, "bench_asha", True, pool_path, ev, args.quick)
    grid = per_trial(g_tab, g_sum["fit_start_unix"])
    asha = per_trial(a_tab, a_sum["fit_start_unix"])

    def best(t: pd.DataFrame) -> dict:
        done = t[t["status"] == "completed"]
        b = done.loc[done["score"].idxmax()]
        return {"trial": f"{b['criterion']} lr={b['lr']:g}", "score": float(b["score"])}

    res = {
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "grid": {"trials": len(grid), "wall_s": g_sum["wall_s"], "trial_s_sum": float(grid["trial_s"].sum()),
                 "stages_trained": int(grid["stage"].sum()), "best": best(grid)},
        "asha": {"trials": len(asha), "wall_s": a_sum["wall_s"], "trial_s_sum": float(asha["trial_s"].sum()),
                 "stages_trained": int(asha["stage"].sum()), "stopped_early": int((asha["status"] == STOPPED).sum()),
                 "best": best(asha)},
        "overhead": {
            "per_trial_mean_s": {k: float(grid[k].mean()) for k in OVERHEAD_PARTS + ["train_s", "eval_s", "trial_s"]},
            "fraction_mean": float(grid["overhead_frac"].mean()),
            "fraction_max": float(grid["overhead_frac"].max()),
            "fraction_without_train_startup": float(((grid["overhead_s"] - grid["train_startup_s"]) / grid["trial_s"]).mean()),
            "by_size": {str(size): {"trial_s_mean": float(g["trial_s"].mean()), "overhead_s_mean": float(g["overhead_s"].mean()),
                                    "fraction_mean": float(g["overhead_frac"].mean()),
                                    "fraction_max": float(g["overhead_frac"].max())}
                        for size, g in grid.groupby("size")},
            "fraction_trials_over_60s": float(grid.loc[grid["trial_s"] >= 60, "overhead_frac"].mean()),
            "unaccounted_s_mean": float(grid["unaccounted_s"].mean()),
        },
    }
    res["train_floor"] = train_floor()  # after the sweeps, in a fresh Ray instance
    res["asha"]["trial_time_saved_frac"] = 1 - res["asha"]["trial_s_sum"] / res["grid"]["trial_s_sum"]
    res["asha"]["wall_saved_frac"] = 1 - a_sum["wall_s"] / g_sum["wall_s"]
    res["asha"]["same_best"] = res["asha"]["best"]["trial"] == res["grid"]["best"]["trial"]
    cols = ["trial_id", "criterion", "size", "lr", "status", "stage", "score"] + OVERHEAD_PARTS + [
        "train_s", "eval_s", "unaccounted_s", "trial_s", "overhead_frac"]
    print("\nGrid run, per trial (seconds):")
    print(grid[cols].round(3).to_string(index=False))
    print("\nASHA run, per trial (seconds):")
    print(asha[cols].round(3).to_string(index=False))
    print("\n| measure | grid | ASHA |\n|---|---|---|")
    for k in ("trials", "stages_trained", "trial_s_sum", "wall_s"):
        print(f"| {k} | {res['grid'][k]:.1f} | {res['asha'][k]:.1f} |" if isinstance(res['grid'][k], float)
              else f"| {k} | {res['grid'][k]} | {res['asha'][k]} |")
    print(f"| best trial | {res['grid']['best']} | {res['asha']['best']} |")
    print(f"\nASHA saved {res['asha']['trial_time_saved_frac']:.1%} of trial time, "
          f"{res['asha']['wall_saved_frac']:.1%} of wall time; same best: {res['asha']['same_best']}")
    print(f"overhead per trial: {res['overhead']['fraction_mean']:.1%} mean, {res['overhead']['fraction_max']:.1%} max "
          f"(without Train start-up: {res['overhead']['fraction_without_train_startup']:.1%}); load {load_before}")
    for size, v in res["overhead"]["by_size"].items():
        print(f"  size {size}: trial {v['trial_s_mean']:.0f} s, overhead {v['overhead_s_mean']:.1f} s = "
              f"{v['fraction_mean']:.1%} mean, {v['fraction_max']:.1%} max")
    print(f"an empty 1-worker Ray Train run takes {res['train_floor']['empty_fit_s_median']:.1f} s here (median of 3)")
    plot(grid, out / "bench_sweep.png")
    (out / "bench_sweep.json").write_text(json.dumps(res, indent=2, default=lambda x: None if
                                                     isinstance(x, float) and math.isnan(x) else str(x)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
