"""The Ray Tune sweep: one trial = select a subset of the scored pool -> train -> evaluate -> report.

The pool is read once by the sweep driver and shipped to trials through the object store;
selection is pure, so a trial never loads a scoring model (a guard refuses the imports).
Each trial is a function trainable that builds and fits a ``TorchTrainer`` with
``TuneReportCallback`` (``Tuner(TorchTrainer)`` does not work in Train V2), its Train runs
named after the trial id. The trial driver holds no CPU, and ``max_concurrent_trials`` is
worked out from the cluster so that every running trial's workers fit at once.

After every training stage the trial evaluates and reports ``score`` with a small
checkpoint (stage done, model folder), so a retried or restored trial continues from the
last finished stage, and a finished trial is never redone.
"""

from __future__ import annotations

import importlib.abc
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from s1ray.config import ConfigError, dump_config
from s1ray.curate.selection import read_pool, select_subset, to_s1k, write_subset
from s1ray.sweep.analysis import COMPLETED, FAILED, FULL, STOPPED, smallest_effective_set, write_report
from s1ray.sweep.config import SweepConfig, concurrent_trials, trial_grid

# ---------------------------------------------------------------------------------------
# Guard: trials reuse the scored pool and never import the curation model stages
# ---------------------------------------------------------------------------------------

# Inside s1ray.curate only these are pure; the rest (traces, solvers, domains, ...) load models.
PURE_CURATE = {"s1ray.curate", "s1ray.curate.selection", "s1ray.curate.config", "s1ray.curate.text"}
SCORING_PACKAGES = ("sentence_transformers",)


def is_scoring_module(name: str) -> bool:
    if name.split(".")[0] in SCORING_PACKAGES:
        return True
    return name.startswith("s1ray.curate.") and name not in PURE_CURATE


class ScoringImportGuard(importlib.abc.MetaPathFinder):
    """Refuses imports of scoring-model code in a trial process, with a message that says why."""

    def find_spec(self, fullname, path, target=None):  # noqa: D401 - importlib protocol
        if is_scoring_module(fullname):
            raise ImportError(f"sweep trial tried to import {fullname!r}: trials select from the scored pool "
                              "and must never load a scoring model (score the pool once, before the sweep)")
        return None


def install_scoring_guard() -> None:
    if not any(isinstance(f, ScoringImportGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, ScoringImportGuard())


def scoring_modules_loaded() -> list[str]:
    return sorted(m for m in sys.modules if is_scoring_module(m))


# ---------------------------------------------------------------------------------------
# Score from an evaluation summary
# ---------------------------------------------------------------------------------------

def extract_score(summary: dict[str, Any], metric: str) -> float:
    """The sweep metric from ``run_evaluate``'s summary ({benchmark: {method: {...}}}).

    ``accuracy``: mean over benchmarks of the first method's accuracy at the largest budget;
    ``performance``: mean over benchmarks of the first method's best accuracy over budgets (s1's
    "performance"); anything else is a dotted path into the summary, e.g.
    ``math500.budget_forcing.performance``.
    """
    if metric in ("accuracy", "performance"):
        if not summary:
            raise KeyError("evaluation summary is empty: no benchmark produced samples")
        values = []
        for bench, methods in summary.items():
            m = next(iter(methods.values()))
            values.append(m["budgets"][-1]["accuracy"] if metric == "accuracy" else m["performance"])
        return float(sum(values) / len(values))
    node: Any = summary
    for part in metric.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"evaluation summary has no {metric!r} (stopped at {part!r}); keys: "
                           f"{list(node) if isinstance(node, dict) else type(node).__name__}")
        node = node[part]
    return float(node)


# ---------------------------------------------------------------------------------------
# One trial
# ---------------------------------------------------------------------------------------

def _state(checkpoint) -> dict[str, Any]:
    if checkpoint is None:
        return {"stage": 0}
    with checkpoint.as_directory() as d:
        return json.loads((Path(d) / "trial_state.json").read_text())


def _report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="s1ray-trial-") as d:
        (Path(d) / "trial_state.json").write_text(json.dumps(state))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _train_stage(cfg: SweepConfig, trial: dict[str, Any], data_path: str, model: str, run_name: str,
                 out_dir: Path, epochs: int) -> tuple[str, float, float, float]:
    """Fit one stage on Ray Train (metrics forwarded to Tune); return (model dir, fit s, export s, loop s)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from s1ray.train.export import copy_export
    from s1ray.train.trainer import build_trainer

    base = cfg.train.model_dump()
    base.update(
        data={**base["data"], "path": data_path, "preset": "s1k", "name": run_name},
        model=model, epochs=epochs, seed=trial["seed"], run_name=run_name,
        storage_path=str(sweep_dir(cfg) / "train"), output_dir=str(out_dir),
        lr=trial.get("lr", base["lr"]), max_failures=0,  # Tune retries the trial; no nested retries
    )
    train_cfg = type(cfg.train).model_validate(base)
    t0 = time.perf_counter()
    result = build_trainer(train_cfg, run_name=run_name, callbacks=[TuneReportCallback()]).fit()
    t1 = time.perf_counter()
    if result.error:
        raise RuntimeError(f"training stage {run_name} failed: {result.error}")
    with result.checkpoint.as_directory() as d:
        copy_export(d, out_dir)
    if not cfg.keep_train_checkpoints:
        shutil.rmtree(Path(train_cfg.resolved_storage_path()) / run_name, ignore_errors=True)
    return str(out_dir), t1 - t0, time.perf_counter() - t1, _loop_seconds(result.metrics or {}, epochs)


def _loop_seconds(metrics: dict[str, Any], epochs: int) -> float:
    """Seconds the training steps took: tokens / tokens_per_s of the loop's metrics window.

    Exact when one window spans the run (metrics_every_steps >= total steps), else an estimate
    from the last window's rate. The rest of a fit is start-up (workers, data, model, DeepSpeed)
    and the final export.
    """
    rate, tokens = metrics.get("tokens_per_s"), metrics.get("data/n_tokens")
    if not rate or not tokens:
        return math.nan
    return float(tokens) * epochs / float(rate)


def _evaluate(cfg: SweepConfig, model_dir: str, out_dir: Path, final: bool) -> tuple[float, dict[str, Any], float]:
    from s1ray.evaluate.runner import run_evaluate

    ev = cfg.evaluate.model_dump()
    ev["generation"]["model"] = model_dir
    ev["output_dir"] = str(out_dir)
    ev["progress"] = False
    if not final and cfg.intermediate_limit:
        for b in ev["benchmarks"]:
            b["limit"] = min(b["limit"] or cfg.intermediate_limit, cfg.intermediate_limit)
    t0 = time.perf_counter()
    out = run_evaluate(type(cfg.evaluate).model_validate(ev))
    return extract_score(out["summary"], cfg.metric), out["summary"], time.perf_counter() - t0


def run_trial(config: dict[str, Any], pool_refs: list, sweep: dict[str, Any]) -> None:
    """Tune function trainable. ``pool_refs`` = [ObjectRef of the pool DataFrame] (fetched here, timed)."""
    import ray
    from ray import tune

    t_start, t_entry = time.perf_counter(), time.time()
    cfg = SweepConfig.model_validate(sweep)
    if cfg.forbid_scoring_modules:
        install_scoring_guard()
    trial = config["trial"]
    trial_id = tune.get_context().get_trial_id()
    work = sweep_dir(cfg) / "trials" / trial_id
    work.mkdir(parents=True, exist_ok=True)
    state = _state(tune.get_checkpoint())
    timings: dict[str, float] = dict(state.get("timings", {}))  # summed over attempts of this trial
    trial_s_before = timings.get("trial_s", 0.0)
    base = {"criterion": trial["criterion"], "size": str(trial["size"]), "seed": trial["seed"]}

    if state["stage"] >= cfg.stages:  # finished before an interruption: report again, redo nothing
        _report({**state["metrics"], "resumed_finished": True}, state)
        return

    with open(work / "attempts.jsonl", "a") as f:  # an audit trail of retries and resumes
        f.write(json.dumps({"time": time.time(), "from_stage": state["stage"], "pid": os.getpid()}) + "\n")
    t0 = time.perf_counter()
    pool: pd.DataFrame = ray.get(pool_refs[0])
    timings["ship_s"] = timings.get("ship_s", 0.0) + time.perf_counter() - t0
    t0 = time.perf_counter()
    size = None if trial["size"] == FULL else int(trial["size"])
    subset = select_subset(pool, trial["criterion"], size, trial["seed"], cfg.selection)
    data_path = write_subset(to_s1k(subset), work, ["parquet"])["parquet"]
    timings["select_s"] = timings.get("select_s", 0.0) + time.perf_counter() - t0
    n_rows = len(subset)
    del pool, subset

    epochs = int(trial.get("epochs") or cfg.train.epochs)
    per_stage = epochs // cfg.stages
    model = state.get("model_dir") or cfg.train.model
    for stage in range(state["stage"], cfg.stages):
        final = stage == cfg.stages - 1
        run_name = f"{trial_id}-stage{stage + 1}"
        model_dir, fit_s, export_s, loop_s = _train_stage(cfg, trial, data_path, model, run_name,
                                                          work / f"model_stage{stage + 1}", per_stage)
        score, summary, eval_s = _evaluate(cfg, model_dir, work / f"eval_stage{stage + 1}", final)
        if stage > 0 and model != cfg.train.model and not cfg.keep_models:
            shutil.rmtree(model, ignore_errors=True)  # the previous stage's weights are superseded
        model = model_dir
        for key, value in (("train_fit_s", fit_s), ("train_loop_s", loop_s), ("export_s", export_s),
                           ("eval_s", eval_s)):
            timings[key] = timings.get(key, 0.0) + value
        timings["trial_s"] = trial_s_before + time.perf_counter() - t_start
        metrics = {"score": score, "stage": stage + 1, "final": final, "n_rows": n_rows, **base,
                   "epochs_done": per_stage * (stage + 1), **{f"t_{k}": v for k, v in timings.items()},
                   "t_entry_unix": t_entry, "t_end_unix": time.time(),
                   "scoring_modules_loaded": json.dumps(scoring_modules_loaded()),
                   "eval_summary": json.dumps(summary, default=str)[:4000]}
        state = {"stage": stage + 1, "model_dir": model_dir, "metrics": metrics, "timings": timings}
        (work / "trial_state.json").write_text(json.dumps(state, indent=2))
        _report(metrics, state)
    if not cfg.keep_models:
        shutil.rmtree(model, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------

def sweep_dir(cfg: SweepConfig) -> Path:
    return Path(cfg.storage_path).expanduser().resolve() / cfg.name


def _trainable(cfg: SweepConfig, pool: pd.DataFrame):
    import ray
    from ray import tune

    ref = ray.put(pool)  # once; every trial reads the same object
    fn = tune.with_parameters(run_trial, pool_refs=[ref], sweep=cfg.model_dump(mode="json"))
    # The trial driver only coordinates: no CPU, so its Train workers get the CPUs (no 2-CPU deadlock).
    return tune.with_resources(fn, {"CPU": 0, "memory": 1 << 20})


def make_scheduler(cfg: SweepConfig):
    """ASHA on the score reported after each stage (``stage`` is its clock), else FIFO."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if not cfg.asha.enabled:
        return FIFOScheduler()
    return ASHAScheduler(time_attr="stage", metric="score", mode=cfg.metric_mode, max_t=cfg.stages,
                         grace_period=cfg.asha.grace_period, reduction_factor=cfg.asha.reduction_factor)


def build_tuner(cfg: SweepConfig, pool: pd.DataFrame, n_concurrent: int):
    """A new Tuner, or the interrupted sweep of the same name restored (finished trials kept)."""
    from ray import tune

    path = sweep_dir(cfg)
    trainable = _trainable(cfg, pool)
    planned = path / "trials_planned.json"
    trials = trial_grid(cfg)
    if tune.Tuner.can_restore(str(path)):
        if not cfg.resume:
            raise ConfigError(f"sweep {path} exists; set resume: true to continue it, or choose another name")
        before = json.loads(planned.read_text()) if planned.exists() else None
        if before is not None and before != json.loads(json.dumps(trials)):
            raise ConfigError(f"sweep {path} was started with a different search space ({len(before)} trials, now "
                              f"{len(trials)}); a restored sweep keeps its space: choose another name")
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=False), True
    planned.write_text(json.dumps(trials, indent=1))
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(trials)},
        tune_config=tune.TuneConfig(scheduler=make_scheduler(cfg), max_concurrent_trials=n_concurrent, reuse_actors=False),
        run_config=tune.RunConfig(
            name=cfg.name, storage_path=str(path.parent),
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=1,
        ),
    )
    return tuner, False


def trial_table(grid, cfg: SweepConfig, pool_size: int) -> pd.DataFrame:
    """One row per trial, whatever happened to it (completed, stopped early by ASHA, failed)."""
    rows = []
    # Trial ids name the trial folders; a trial that failed before reporting has none in its metrics.
    tune_trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    ids = [t.trial_id for t in tune_trials] if len(tune_trials) == len(grid) else [None] * len(grid)
    for r, tid in zip(grid, ids):
        trial = (r.config or {}).get("trial", {})
        df = r.metrics_dataframe if r.metrics_dataframe is not None else pd.DataFrame()
        scored = df[df["score"].notna()] if "score" in df.columns else pd.DataFrame()
        last = scored.iloc[-1].to_dict() if len(scored) else {}
        stage = int(last.get("stage", 0) or 0)
        if r.error is not None:
            status = FAILED
        elif stage >= cfg.stages:
            status = COMPLETED
        else:
            status = STOPPED if stage > 0 else FAILED
        size = trial.get("size")
        n_rows = last.get("n_rows")
        if (n_rows is None or pd.isna(n_rows)) and size == FULL:
            n_rows = pool_size
        rows.append({
            "trial_id": tid or (r.metrics or {}).get("trial_id") or Path(r.path).name,
            "criterion": trial.get("criterion"), "size": size, "seed": trial.get("seed"),
            "lr": trial.get("lr", cfg.train.lr), "epochs": trial.get("epochs", cfg.train.epochs),
            "n_rows": None if n_rows is None or pd.isna(n_rows) else int(n_rows), "status": status,
            "score": float(last["score"]) if last else math.nan, "stage": stage,
            "error": _error_text(r.error) if r.error is not None else (
                None if status != FAILED else "no result reported"),
            "scoring_modules_loaded": last.get("scoring_modules_loaded"),  # JSON list, "[]" when clean
            **{k: last.get(k) for k in sorted(last) if str(k).startswith("t_")},
        })
    table = pd.DataFrame(rows)
    table["n_rows"] = table["n_rows"].astype("Int64")
    return table


def _error_text(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    # Tune wraps the cause in a long traceback; its last line names what went wrong.
    return (text[-1] if text else type(err).__name__)[:500]


def run_sweep(cfg: SweepConfig) -> dict[str, Any]:
    """``s1ray sweep``: run (or resume) the sweep, then write the smallest-effective-set report."""
    from s1ray.cluster import init_ray

    # Train results forwarded by TuneReportCallback carry no `score`; only the stage reports do.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    init_ray(cfg.ray)
    out = sweep_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep_config.yaml").write_text(dump_config(cfg))
    pool = read_pool(cfg.pool)
    import ray

    n_concurrent = concurrent_trials(cfg, ray.cluster_resources())
    t0 = time.perf_counter()
    tuner, restored = build_tuner(cfg, pool, n_concurrent)
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    if not cfg.keep_models:  # trials stopped by ASHA end at their report and leave their weights behind
        for folder in out.glob("trials/*/model_stage*"):
            shutil.rmtree(folder, ignore_errors=True)
    table = trial_table(grid, cfg, len(pool))
    table.to_csv(out / "trials.csv", index=False)
    summary: dict[str, Any] = {
        "sweep_dir": str(out), "restored": restored, "n_trials": len(table),
        "status": table["status"].value_counts().to_dict(), "max_concurrent_trials": n_concurrent,
        "wall_s": round(wall, 1), "trials_csv": str(out / "trials.csv"),
    }
    if (table["status"] == COMPLETED).any():
        result = smallest_effective_set(table, cfg.analysis.epsilon, cfg.analysis.epsilon_mode,
                                        cfg.analysis.reference, cfg.metric_mode)
        summary["smallest_effective_set"] = result["smallest"]
        summary["reference"] = result["reference"]
        summary["paths"] = write_report(result, out / "report", cfg.metric)
    else:
        summary["error"] = "no trial completed: see trials.csv for each trial's error"
    return summary
