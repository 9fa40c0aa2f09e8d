"""The Ray Tune sweep: one trial = select a subset of the scored pool -> train -> evaluate -> report.

The pool is read once by the sweep driver and shipped to trials through the object store;
selection is pure, so a trial never loads a scoring model (a guard refuses the imports).
Each trial is a function trainable that builds and fits one ``TorchTrainer`` with
``TuneReportCallback`` (``Tuner(TorchTrainer)`` does not work in Train V2), the Train run
named after the trial id. The trial driver holds no CPU, and ``max_concurrent_trials`` is
worked out from the cluster so that every running trial's workers fit at once.

A trial starts one Train run, not one per stage: Train start-up (worker group, model,
DeepSpeed) is most of a small trial's overhead. The run evaluates the model on its own
workers after each of ``stages`` equal parts of training and reports ``score`` and
``stage``; ASHA stops weak trials on those reports. A retried or restored trial resumes its
Train run by name from the run's last checkpoint, and a finished trial is never redone.

With ``evaluate.mode: exported`` the Train run skips its final evaluation and exports the
weights instead; once it has released its workers the trial evaluates them with the vllm
backend (``evaluate_exported``) and reports that score as the last stage's.
"""

from __future__ import annotations

import importlib.abc
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from s1ray.config import ConfigError, dump_config
from s1ray.curate.selection import read_pool, select_subset, to_s1k, write_subset
from s1ray.evaluate.config import EvaluateConfig
from s1ray.storage import check_owned
from s1ray.sweep.analysis import COMPLETED, FAILED, FULL, STOPPED, smallest_effective_set, write_report
from s1ray.sweep.config import SweepConfig, concurrent_trials, trial_grid

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Guard: trials reuse the scored pool and never import the curation model stages
# ---------------------------------------------------------------------------------------

# Inside s1ray.curate only these are pure; the rest (traces, solvers, domains, ...) load models.
PURE_CURATE = {"s1ray.curate", "s1ray.curate.selection", "s1ray.curate.text"}  # not config: it imports every stage
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
# One trial
# ---------------------------------------------------------------------------------------

def _state(checkpoint) -> dict[str, Any]:
    if checkpoint is None:
        return {"finished": False}
    with checkpoint.as_directory() as d:
        return json.loads((Path(d) / "trial_state.json").read_text())


def _report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="s1ray-trial-") as d:
        (Path(d) / "trial_state.json").write_text(json.dumps(state))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def trial_train_config(cfg: SweepConfig, trial: dict[str, Any], data_path: str, trial_id: str, work: Path):
    """The trial's ``s1ray train`` config: the base train section + its subset and searched values."""
    base = cfg.train.model_dump()
    base.update(
        data={**base["data"], "path": data_path, "preset": "s1k", "name": trial_id},
        epochs=int(trial.get("epochs") or cfg.train.epochs), seed=trial["seed"], run_name=trial_id,
        storage_path=str(sweep_dir(cfg) / "train"), output_dir=str(work / "model"),
        lr=trial.get("lr", base["lr"]), max_failures=0,  # Tune retries the trial; no nested retries
    )
    return type(cfg.train).model_validate(base)


def trial_evaluation(cfg: SweepConfig, work: Path):
    """Scores after each of ``stages`` equal parts of the trial's training, on its Train workers;
    in evaluate.mode exported all but the last (which runs on the exported weights), None if that leaves none."""
    from s1ray.evaluate.in_training import InTrainingEval

    exported = cfg.evaluate.mode == "exported"
    if exported and cfg.stages < 2:
        return None
    ev = cfg.evaluate.plain().model_dump()
    ev["generation"]["model"] = f"{cfg.train.model} (trained in this trial)"
    if exported:  # the intermediate evaluations run the live model: HF, at its own batch size
        ev["generation"].update(backend="hf", batch_size=cfg.intermediate_batch_size or ev["generation"]["batch_size"])
    return InTrainingEval(cfg=EvaluateConfig.model_validate(ev), evaluations=cfg.stages,
                          limit_before_last=cfg.intermediate_limit, metric=cfg.metric, output_dir=str(work / "eval"),
                          final_here=not exported)


def evaluate_exported(cfg: SweepConfig, checkpoint, work: Path, step: int) -> dict[str, Any]:
    """The trial's final evaluation on its exported weights (``s1ray evaluate``'s runner, vLLM actors).

    The weights go from the Train run's final checkpoint to ``trials/<id>/model``; the runner's
    actor pool takes the CPUs/GPUs the finished Train run released. The folder is deleted
    afterwards unless ``keep_models``.
    """
    from s1ray.evaluate.metrics import score_from_summary
    from s1ray.evaluate.runner import run_evaluate
    from s1ray.train.export import copy_export

    t0 = time.perf_counter()
    with checkpoint.as_directory() as d:
        model_dir = copy_export(d, work / "model")
    export_s = time.perf_counter() - t0
    ev = cfg.evaluate.plain().model_dump()
    ev["generation"]["model"] = str(model_dir)
    ev.update(output_dir=str(work / "eval" / f"step{step:06d}-exported"), progress=False)
    ev_cfg = EvaluateConfig.model_validate(ev)
    t0 = time.perf_counter()
    try:
        out = run_evaluate(ev_cfg)
    finally:
        if not cfg.keep_models:
            shutil.rmtree(model_dir, ignore_errors=True)
    return {"score": score_from_summary(out["summary"], cfg.metric), "stage": cfg.stages, "eval/dir": ev_cfg.output_dir,
            "export_s": export_s, "exported_eval_s": time.perf_counter() - t0}


def log_attempt(work: Path, max_failures: int, trial_id: str) -> None:
    """Start an attempt in ``attempts.jsonl``, the trial's audit trail of retries and resumes.

    A trial's retry budget spans resumes: Tune restarts an interrupted sweep's unfinished trials
    with fresh failure counters, so an attempt first checks the failures already recorded here
    and gives up at once, without training, when ``max_failures`` retries were already used. An
    attempt cut off by the interruption itself (a start record without ``failed``) is not a failure.
    """
    path = work / "attempts.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    failed = [r for r in records if r.get("failed")]
    if len(failed) > max_failures:
        raise RuntimeError(f"trial {trial_id}: its retry budget ({max_failures} retries) was used before the "
                           f"sweep was resumed; last error: {failed[-1]['failed']}")
    with open(path, "a") as f:
        f.write(json.dumps({"time": time.time(), "pid": os.getpid()}) + "\n")


def run_trial(config: dict[str, Any], pool_refs: list, sweep: dict[str, Any]) -> None:
    """Tune function trainable: select -> one Ray Train run that trains and evaluates -> report.

    ``pool_refs`` = [ObjectRef of the pool DataFrame] (fetched here, timed). The Train run reports
    the score after every stage (forwarded to Tune by ``TuneReportCallback``, where ASHA sees it);
    the trial then reports the final score with where its time went.
    """
    import ray
    from ray.tune.integration.ray_train import TuneReportCallback

    from s1ray.train.export import copy_export
    from s1ray.train.trainer import build_trainer

    t_start, t_entry = time.perf_counter(), time.time()
    cfg = SweepConfig.model_validate(sweep)
    if cfg.forbid_scoring_modules:
        install_scoring_guard()
    trial = config["trial"]
    trial_id = tune.get_context().get_trial_id()
    work = sweep_dir(cfg) / "trials" / trial_id
    work.mkdir(parents=True, exist_ok=True)
    state = _state(tune.get_checkpoint())
    if state["finished"]:  # finished before an interruption: report again, redo nothing
        _report({**state["metrics"], "resumed_finished": True}, state)
        return

    log_attempt(work, cfg.max_failures, trial_id)
    try:
        t0 = time.perf_counter()
        pool: pd.DataFrame = ray.get(pool_refs[0])
        ship_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        size = None if trial["size"] == FULL else int(trial["size"])
        subset = select_subset(pool, trial["criterion"], size, trial["seed"], cfg.selection)
        data_path = write_subset(to_s1k(subset), work, ["parquet"])["parquet"]
        select_s = time.perf_counter() - t0
        n_rows = len(subset)
        del pool, subset

        base = {"criterion": trial["criterion"], "size": str(trial["size"]), "seed": trial["seed"], "n_rows": n_rows}
        # Added to every report of the Train run, so a trial ASHA stops mid-run still says when it began.
        echo = {**base, "t_entry_unix": t_entry, "t_select_s": select_s, "t_ship_s": ship_s}
        train_cfg = trial_train_config(cfg, trial, data_path, trial_id, work)
        # Train V2's controller polls its workers every 2 s, so a run's end is noticed up to 2 s late:
        # a visible share of a short trial. Polling a handful of workers more often costs nothing.
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
        t_fit = time.time()
        exported = cfg.evaluate.mode == "exported"
        result = build_trainer(train_cfg, run_name=trial_id, callbacks=[TuneReportCallback()],
                               report_also=echo, evaluation=trial_evaluation(cfg, work),
                               export=cfg.keep_models or exported).fit()
        t_fit_end = time.time()
        if result.error:
            raise RuntimeError(f"training run {trial_id} failed: {result.error}")
        m = dict(result.metrics or {})
        exported_eval_s = 0.0
        if exported:  # the Train workers are gone: their resources run the evaluation of the exported weights
            final = evaluate_exported(cfg, result.checkpoint, work, int(m["step"]))
            export_s, exported_eval_s = final.pop("export_s"), final.pop("exported_eval_s")
            m.update(final)
        elif "score" not in m:
            raise RuntimeError(f"training run {trial_id} finished without a final evaluation (metrics: {sorted(m)})")
        else:
            t0 = time.perf_counter()
            if cfg.keep_models:
                with result.checkpoint.as_directory() as d:
                    copy_export(d, work / "model")
            export_s = time.perf_counter() - t0
        timings = {
            "select_s": select_s, "ship_s": ship_s, "fit_s": t_fit_end - t_fit,
            # Worker group, data, model and DeepSpeed: fit start -> the first optimizer step.
            "train_startup_s": m["time/entry_unix"] - t_fit + m["time/ready_s"],
            "steps_s": m["time/steps_s"], "eval_s": m["time/eval_s"] + exported_eval_s,
            "checkpoint_s": m["time/checkpoint_s"],
            "finish_s": t_fit_end - m["time/report_unix"],  # final report -> fit returns (upload, shutdown)
            "export_s": export_s, "exported_eval_s": exported_eval_s, "trial_s": time.perf_counter() - t_start,
        }
        metrics = {**echo, "score": float(m["score"]), "stage": int(m["stage"]), "final": True,
                   "epochs_done": train_cfg.epochs, "eval_dir": m.get("eval/dir"),
                   **{f"t_{k}": v for k, v in timings.items()}, "t_end_unix": time.time(),
                   "scoring_modules_loaded": json.dumps(scoring_modules_loaded())}
        state = {"finished": True, "metrics": metrics}
        (work / "trial_state.json").write_text(json.dumps(state, indent=2))
        _report(metrics, state)
        if not cfg.keep_train_checkpoints:
            shutil.rmtree(Path(train_cfg.resolved_storage_path()) / trial_id, ignore_errors=True)

    except Exception as e:
        with open(work / "attempts.jsonl", "a") as f:
            f.write(json.dumps({"time": time.time(), "pid": os.getpid(), "failed": f"{type(e).__name__}: {e}"[:500]}) + "\n")
        raise


# ---------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------

def sweep_dir(cfg: SweepConfig) -> Path:
    return Path(cfg.storage_path).expanduser().resolve() / cfg.name


def _trainable(cfg: SweepConfig, pool: pd.DataFrame):
    import ray
    ref = ray.put(pool)  # once; every trial reads the same object
    fn = tune.with_parameters(run_trial, pool_refs=[ref], sweep=cfg.model_dump(mode="json"))
    # The trial driver only coordinates: no CPU, so its Train workers get the CPUs (no 2-CPU deadlock).
    return tune.with_resources(fn, {"CPU": 0, "memory": 1 << 20})


def release_placement_group(pg_hex: str | None) -> bool:
    """Remove a Train run's placement group if it is still there; True when one was removed."""
    if not pg_hex:
        return False
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    pg = PlacementGroup(PlacementGroupID(bytes.fromhex(pg_hex)))
    if placement_group_table(pg).get("state") in (None, "REMOVED"):
        return False
    remove_placement_group(pg)
    return True


class ReleaseStoppedTrainRuns(tune.Callback):
    """When a trial ends, free its Train run's placement group if it is still held.

    ASHA stops a trial by ending its actor while the Train run is in flight; the run's
    controller and workers die with it, but its placement group (the CPUs/GPUs) belongs to the
    job. Ray Train's own cleaner frees it only where the State API (the dashboard) answers;
    without this, the next trial could wait for those resources forever.
    """

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._release(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._release(trial)

    @staticmethod
    def _release(trial) -> None:
        try:
            if release_placement_group((trial.last_result or {}).get("placement_group_id")):
                print(f"released the placement group of trial {trial.trial_id}'s stopped Train run", flush=True)
        except Exception as e:  # never fail the sweep over clean-up; say so
            print(f"could not release trial {trial.trial_id}'s placement group: {e}", flush=True)


def make_scheduler(cfg: SweepConfig):
    """ASHA on the score reported after each intermediate stage (``stage`` is its clock), else FIFO.

    The rungs are the intermediate evaluations only (max_t = stages - 1): Ray's ASHA puts a rung
    at max_t, and a trial stopped there would be cut off after its last evaluation, before it
    reports where its time went. The final score never stops a trial (stop_last_trials=False).
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if not cfg.asha.enabled:
        return FIFOScheduler()
    return ASHAScheduler(time_attr="stage", metric="score", mode=cfg.metric_mode, max_t=cfg.stages - 1,
                         grace_period=cfg.asha.grace_period, reduction_factor=cfg.asha.reduction_factor,
                         stop_last_trials=False)


def build_tuner(cfg: SweepConfig, pool: pd.DataFrame, n_concurrent: int):
    """A new Tuner, or the interrupted sweep of the same name restored (finished trials kept)."""
    path = sweep_dir(cfg)
    check_owned(path, "Tune state")  # a restored sweep is unpickled: only from storage it owns
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
            callbacks=[ReleaseStoppedTrainRuns()],
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
        if pd.isna(last.get("t_trial_s", math.nan)) and last.get("time/report_unix") and last.get("t_entry_unix"):
            # Ended (stopped by ASHA) after a Train report: the trial ran from its start to that report.
            rows[-1].update(t_trial_s=last["time/report_unix"] - last["t_entry_unix"],
                            t_end_unix=last["time/report_unix"], t_steps_s=last.get("time/steps_s"),
                            t_eval_s=last.get("time/eval_s"))
    table = pd.DataFrame(rows)
    table["n_rows"] = table["n_rows"].astype("Int64")
    return table


def _error_text(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    # Tune wraps the cause in a long traceback; its last line names what went wrong.
    return (text[-1] if text else type(err).__name__)[:500]


# Columns the selection criteria read (SelectionParams names them); random and full read none.
def _criterion_columns(criterion: str, cfg: SweepConfig) -> list[str]:
    p = cfg.selection
    if criterion in ("random", FULL):
        return []
    if criterion == "difficulty":
        return [p.length_column, p.failures_column]
    return [p.length_column]  # s1, algorithm1, diverse, longest (domains fall back to "unknown")


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def check_pool(pool: pd.DataFrame, cfg: SweepConfig) -> pd.DataFrame:
    """The rows trials select from, after checking the pool can serve the planned trials.

    Runs before Ray starts, so a pool that cannot serve the sweep fails once, with one message,
    instead of every trial failing (and being retried) on its own. Checked: rows the funnel kept
    (``keep``; like ``s1ray select``, only those are used), that they can become training
    examples (a reasoning trace and an answer: a rule-only pool has none), and the columns each
    searched criterion reads (``thinking_tokens``, ``solver_failures``, written by curate's
    ``scoring``). When no criterion can be served the sweep stops here; when only some cannot,
    their trials are named in a warning and fail on their own (shown in trials.csv), while the
    others still give a result.
    """
    problems = []
    n_read = len(pool)
    if "keep" in pool.columns:
        pool = pool[pool["keep"].fillna(False).astype(bool)].reset_index(drop=True)
    if pool.empty:
        raise ConfigError(f"sweep pool {cfg.pool}: no usable rows ({n_read} read, none kept by the curate funnel); "
                          "no trial was started")
    unservable = {}
    criteria = list(dict.fromkeys(t["criterion"] for t in trial_grid(cfg)))
    for criterion in criteria:
        missing = [c for c in _criterion_columns(criterion, cfg) if c not in pool.columns
                   or pd.to_numeric(pool[c], errors="coerce").notna().sum() == 0]
        if missing:
            unservable[criterion] = missing
    if len(unservable) == len(criteria):
        problems += [f"criterion {c!r} needs column(s) {m}, which the pool lacks or leaves empty (curate's "
                     "`scoring` section writes them: lengths, difficulty)" for c, m in unservable.items()]
    s1k = to_s1k(pool)
    has_trace = s1k["thinking_trajectories"].map(lambda ts: any(_text(t) for t in ts))
    has_answer = s1k[["attempt", "solution"]].map(_text).any(axis=1)
    if "answer" in s1k.columns:
        has_answer |= s1k["answer"].map(_text)
    trainable = int((has_trace & has_answer).sum())
    if trainable == 0:
        problems.append(f"none of its {len(pool)} kept rows can be trained on ({int(has_trace.sum())} have a "
                        f"reasoning trace, {int(has_answer.sum())} an answer): score the pool with traces "
                        "(curate's `scoring.traces`, or a source with thinking traces)")
    if problems:
        raise ConfigError(f"sweep pool {cfg.pool} cannot serve this sweep; no trial was started:\n  - "
                          + "\n  - ".join(problems)
                          + "\n(s1ray curate --config jobs/configs/curate_shared_pool_scored.yaml writes a scored "
                            "pool with traces; see jobs/configs/sweep_local.yaml)")
    for criterion, missing in unservable.items():
        log.warning("sweep pool %s has no %s: the %r trials will fail (the other criteria run)",
                    cfg.pool, " / ".join(missing), criterion)
    if trainable < len(pool):
        log.warning("sweep pool %s: %d of %d kept rows have no reasoning trace or answer; a trial trains on the "
                    "rest of its subset", cfg.pool, len(pool) - trainable, len(pool))
    return pool


def _local(path: str | None) -> str | None:
    """An existing relative local path made absolute; anything else (hub ids, URIs, None) as it is."""
    if not path or "://" in path or Path(path).is_absolute() or not Path(path).expanduser().exists():
        return path
    return str(Path(path).expanduser().resolve())


def absolute_paths(cfg: SweepConfig) -> SweepConfig:
    """Relative paths resolved on the driver, where the user wrote them.

    Trials run in Tune's trial folders and their Train workers in the run's folder, so a path
    like ``../shared/data/eval/math500.jsonl`` or ``outputs/sweeps`` would mean another place there.
    """
    ev = cfg.evaluate.model_copy(deep=True)
    for bench in ev.benchmarks:
        bench.path = _local(bench.path)
    train = cfg.train.model_copy(update={"model": _local(cfg.train.model)})
    return cfg.model_copy(update={"storage_path": str(Path(cfg.storage_path).expanduser().resolve()),
                                  "pool": _local(cfg.pool), "evaluate": ev, "train": train})


def run_sweep(cfg: SweepConfig) -> dict[str, Any]:
    """``s1ray sweep``: run (or resume) the sweep, then write the smallest-effective-set report."""
    from s1ray.cluster import init_ray

    # Train results forwarded by TuneReportCallback carry no `score`; only the stage reports do.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Ray Train frees the placement group of a run whose trial Tune stopped through the State
    # API, which a local instance only serves with its dashboard (on 127.0.0.1).
    cfg = absolute_paths(cfg)
    pool = check_pool(read_pool(cfg.pool), cfg)  # before Ray starts or anything is written
    init_ray(cfg.ray.model_copy(update={"include_dashboard": True}))
    out = sweep_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep_config.yaml").write_text(dump_config(cfg))
    from s1ray.resources import cluster_capacity

    n_concurrent = concurrent_trials(cfg, cluster_capacity(), n_trials=len(trial_grid(cfg)))
    t0 = time.perf_counter()
    tuner, restored = build_tuner(cfg, pool, n_concurrent)
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    if not cfg.keep_train_checkpoints:  # trials stopped by ASHA leave their Train run folder behind
        shutil.rmtree(out / "train", ignore_errors=True)
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
