"""Sweep config: trial grid, search, resources, and the scoring-model guard."""

import sys

import pytest

from s1ray.config import ConfigError, load_config
from s1ray.sweep.config import SweepConfig, concurrent_trials, trial_cpus, trial_grid
from s1ray.sweep.driver import ScoringImportGuard, is_scoring_module, make_scheduler

BASE = {
    "pool": "pool.parquet",
    "train": {"model": "tiny:tiny", "epochs": 2, "global_batch_size": 2},
    "evaluate": {"benchmarks": [{"name": "jsonl", "path": "eval.jsonl"}], "budgets": [8]},
}


def make(**over):
    data = {**BASE, **over}
    return SweepConfig.model_validate(data)


def test_grid_dedups_full_pool_trials_and_crosses_lr():
    cfg = make(space={"sizes": [10, "full"], "criteria": ["s1", "random"], "seeds": [0, 1], "lr": [1e-5, 1e-4]})
    trials = trial_grid(cfg)
    # 10: 2 criteria x 2 seeds x 2 lr = 8; full: 1 (whatever criterion) x 2 seeds x 2 lr = 4
    assert len(trials) == 12
    full = [t for t in trials if t["size"] == "full"]
    assert len(full) == 4 and all(t["criterion"] == "full" for t in full)
    assert {t["lr"] for t in trials} == {1e-5, 1e-4}


def test_random_search_draws_distinct_trials_reproducibly():
    space = {"sizes": [1, 2, 3, 4], "criteria": ["s1", "random", "longest"], "seeds": [0]}
    a = trial_grid(make(space=space, search={"kind": "random", "num_samples": 5, "seed": 3}))
    b = trial_grid(make(space=space, search={"kind": "random", "num_samples": 5, "seed": 3}))
    assert a == b and len(a) == 5 and len({tuple(sorted(t.items())) for t in a}) == 5


def test_trial_placeholders_and_validation_errors(tmp_path):
    cfg = make()
    assert cfg.train.data.preset == "s1k"  # filled per trial, not needed in the YAML
    assert make(stages=2, space={"epochs": [3]}).stages == 2  # stages split steps, not epochs
    with pytest.raises(ValueError, match="zero_stage to 2 or lower"):
        make(train={**BASE["train"], "deepspeed": {"zero_stage": 3}})
    with pytest.raises(ValueError, match="hf backend"):
        make(evaluate={**BASE["evaluate"], "generation": {"model": "m", "backend": "vllm"}})
    with pytest.raises(ValueError, match="needs stages >= 2"):
        make(asha={"enabled": True})
    p = tmp_path / "s.yaml"
    p.write_text("pool: x\ntrain: {model: tiny:tiny}\nevaluate: {benchmarks: [{name: aime24}], budgets: [8]}\n"
                 "space: {criteria: [best]}\n")
    with pytest.raises(ConfigError, match="space.criteria"):
        load_config(SweepConfig, p)


def test_concurrency_fits_workers_of_every_running_trial():
    cfg = make(train={**BASE["train"], "num_workers": 2, "global_batch_size": 2})
    assert trial_cpus(cfg) == 2
    assert concurrent_trials(cfg, 2) == 1  # two 2-worker trials on 2 CPUs would deadlock
    assert concurrent_trials(cfg, 8) == 4
    one = make()
    assert concurrent_trials(one, 2) == 2
    assert concurrent_trials(make(max_concurrent_trials=1), 2) == 1
    gpu = make(train={**BASE["train"], "num_workers": 4, "use_gpu": True, "global_batch_size": 4},
               evaluate={**BASE["evaluate"], "generation": {"model": "m", "num_gpus": 1, "concurrency": 2}})
    assert concurrent_trials(gpu, {"CPU": 64, "GPU": 8}) == 2  # GPUs bound it, not CPUs
    assert concurrent_trials(gpu, {"CPU": 64, "GPU": 2}) == 1
    # A cluster that can grow without a published limit (an empty autoscaling cluster has 0 CPUs
    # now): every trial starts and its pending workers make the autoscaler add nodes.
    assert concurrent_trials(cfg, None, n_trials=6) == 6
    assert concurrent_trials(make(max_concurrent_trials=4), None, n_trials=6) == 4


def test_scoring_guard_refuses_model_stage_imports():
    assert is_scoring_module("sentence_transformers.models")
    assert is_scoring_module("s1ray.curate.domains")
    assert not is_scoring_module("s1ray.curate.selection")
    guard = ScoringImportGuard()
    sys.meta_path.insert(0, guard)
    try:
        sys.modules.pop("s1ray.curate.lengths", None)
        with pytest.raises(ImportError, match="must never load a scoring model"):
            import s1ray.curate.lengths  # noqa: F401
    finally:
        sys.meta_path.remove(guard)


def test_asha_stops_on_the_stage_score_and_ignores_forwarded_train_metrics():
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.experiment import Trial

    sched = make_scheduler(make(stages=2, asha={"enabled": True, "grace_period": 1, "reduction_factor": 2}))
    trials = [Trial("t", stub=True, trial_id=f"t{i}") for i in range(3)]
    for t in trials:
        sched.on_trial_add(None, t)
    # A Train metric forwarded by TuneReportCallback (no score, no stage) never stops a trial.
    assert sched.on_trial_result(None, trials[0], {"loss": 3.0, "training_iteration": 1}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, trials[0], {"score": 0.6, "stage": 1}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, trials[1], {"score": 0.5, "stage": 1}) == TrialScheduler.STOP
    assert sched.on_trial_result(None, trials[2], {"score": 0.7, "stage": 1}) == TrialScheduler.CONTINUE
    # The last stage's score never stops a trial, even the worst one: it finishes on its own
    # (final report, clean-up) after its last evaluation.
    assert sched.on_trial_result(None, trials[0], {"score": 0.9, "stage": 2}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, trials[2], {"score": 0.1, "stage": 2}) == TrialScheduler.CONTINUE
    deep = make_scheduler(make(stages=4, asha={"enabled": True, "grace_period": 1, "reduction_factor": 2}))
    for t in trials:
        deep.on_trial_add(None, t)
    for stage in (1, 2, 3, 4):
        assert deep.on_trial_result(None, trials[0], {"score": 0.9, "stage": stage}) == TrialScheduler.CONTINUE
    assert deep.on_trial_result(None, trials[1], {"score": 0.1, "stage": 1}) == TrialScheduler.STOP
    assert deep.on_trial_result(None, trials[2], {"score": 0.95, "stage": 2}) == TrialScheduler.CONTINUE
    assert deep.on_trial_result(None, trials[2], {"score": 0.0, "stage": 4}) == TrialScheduler.CONTINUE
    assert make_scheduler(make()).__class__.__name__ == "FIFOScheduler"


def test_the_sweep_imports_no_curate_stage():
    """The driver and a trial's imports stay on the pure side of the guard (the stage modules,
    and the curate config that assembles them, are never loaded by a sweep)."""
    import subprocess
    import sys

    code = ("import sys, s1ray.sweep.driver, s1ray.sweep.config; "
            "print(sorted(m for m in sys.modules if m.startswith('s1ray.curate')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    from s1ray.sweep.driver import is_scoring_module

    loaded = eval(out)
    assert "s1ray.curate.selection" in loaded and not [m for m in loaded if is_scoring_module(m)], loaded


def test_exported_mode_validation_and_intermediate_evaluations(tmp_path):
    from s1ray.evaluate.config import EvaluateConfig
    from s1ray.sweep.driver import trial_evaluation

    exported = {**BASE["evaluate"], "mode": "exported", "generation": {"model": "m", "backend": "vllm", "batch_size": 64}}
    cfg = make(evaluate=exported)
    plain = cfg.evaluate.plain()
    assert type(plain) is EvaluateConfig and plain.generation.backend == "vllm"  # what `s1ray evaluate` reads
    assert trial_evaluation(cfg, tmp_path) is None  # one stage: nothing is evaluated in training
    # ZeRO-3 is fine when nothing runs on the training workers, not with intermediate evaluations.
    zero3 = {**BASE["train"], "deepspeed": {"zero_stage": 3}}
    assert make(train=zero3, evaluate=exported).train.deepspeed.zero_stage == 3
    with pytest.raises(ValueError, match="zero_stage to 2 or lower"):
        make(train=zero3, evaluate=exported, stages=2)
    # Intermediate evaluations stay in training: HF, at their own batch size, never the last step.
    staged = make(evaluate=exported, stages=3, intermediate_batch_size=4)
    ev = trial_evaluation(staged, tmp_path)
    assert ev.cfg.generation.backend == "hf" and ev.cfg.generation.batch_size == 4
    assert ev.steps(9) == [3, 6] and [ev.stage_of(s, 9) for s in ev.steps(9)] == [1, 2]
    assert trial_evaluation(make(evaluate=exported, stages=3), tmp_path).cfg.generation.batch_size == 64
    # The evaluation takes only what the trial's Train workers release.
    gpu = {**BASE["train"], "num_workers": 4, "use_gpu": True, "global_batch_size": 4}
    with pytest.raises(ValueError, match="8 GPUs .* hold 4"):
        make(train=gpu, evaluate={**exported, "generation": {"model": "m", "backend": "vllm", "num_gpus": 1,
                                                              "concurrency": 8, "num_cpus": 0.5}})
    with pytest.raises(ValueError, match="num_gpus is 0"):
        make(train=gpu, evaluate=exported)
    assert make(train=gpu, evaluate={**exported, "generation": {"model": "m", "backend": "vllm", "num_gpus": 2,
                                                                 "concurrency": 2}}).evaluate.mode == "exported"
    with pytest.raises(ValueError, match="exported runs the exported weights"):
        make(evaluate={**exported, "generation": {"model": "m", "backend": "openai"}})
    with pytest.raises(ValueError, match="evaluate.mode: exported"):  # in training names the way out
        make(evaluate={**BASE["evaluate"], "generation": {"model": "m", "backend": "vllm"}})
