"""``s1ray sweep`` configuration: the search space over subsets, the search, early stopping,
the smallest-effective-set analysis, and the base train/evaluate configs every trial starts from.

The train and evaluate sections are the ordinary ``s1ray train`` / ``s1ray evaluate`` configs;
per trial the sweep fills in the training data (the selected subset), the model to evaluate
(the trained one), output folders, and the searched values (lr, epochs, seed).
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any, Literal

from pydantic import Field, model_validator

from s1ray.config import RayConfig, StrictModel
from s1ray.curate.selection import Criterion, SelectionParams
from s1ray.evaluate.config import EvaluateConfig
from s1ray.train.config import TrainConfig

FULL = "full"
# Filled in per trial; a placeholder lets the base sections validate without them.
_TRIAL_DATA = {"name": "sweep-subset", "preset": "s1k"}
_TRIAL_MODEL = "<trained model of the trial>"


class SearchSpace(StrictModel):
    """Values to sweep. A trial is one combination; size "full" is the whole pool (one trial
    per seed and hyperparameter setting, whatever the criterion: the set is the same)."""

    sizes: list[int | Literal["full"]] = [100, 250, 500, 1000, FULL]
    criteria: list[Criterion] = ["s1", "random", "diverse", "longest", "difficulty"]
    seeds: list[int] = [0]
    lr: list[float] | None = None  # None: train.lr
    epochs: list[int] | None = None  # None: train.epochs

    @model_validator(mode="after")
    def _non_empty(self) -> "SearchSpace":
        for key in ("sizes", "criteria", "seeds"):
            if not getattr(self, key):
                raise ValueError(f"space.{key} is empty")
        if any(isinstance(s, int) and s < 1 for s in self.sizes):
            raise ValueError(f"space.sizes must be >= 1 or 'full', got {self.sizes}")
        return self


class SearchSection(StrictModel):
    """``grid``: every combination; ``random``: ``num_samples`` distinct combinations drawn
    with ``seed`` (random search over the discrete space). Repeats come from ``space.seeds``."""

    kind: Literal["grid", "random"] = "grid"
    num_samples: int = Field(8, ge=1)
    seed: int = 0


class ASHASection(StrictModel):
    """Async successive halving on the intermediate evaluation after each training stage."""

    enabled: bool = False
    grace_period: int = Field(1, ge=1)  # stages every trial runs before it may be stopped
    reduction_factor: float = Field(2.0, gt=1)


EvalMode = Literal["in_training", "exported"]


class SweepEvaluateConfig(EvaluateConfig):
    """An ``s1ray evaluate`` config plus where a trial runs its final evaluation (``mode``).

    ``in_training``: HF ``generate`` on the Train workers with the weights in memory, no export
    (cheapest for small models and short generations). ``exported``: the trial writes its final
    weights to ``trials/<id>/model`` and evaluates them with ``generation`` (the vllm backend) on
    an actor pool that takes the resources its Train workers released, then deletes them unless
    ``keep_models``. Worth it where HF generation is much slower than vLLM (long generations at
    scale: ``s1ray plan`` says by how much). Intermediate stage evaluations (ASHA) stay in training.
    """

    mode: EvalMode = "in_training"

    def plain(self) -> EvaluateConfig:
        """The ``s1ray evaluate`` config itself (without ``mode``)."""
        return EvaluateConfig.model_validate(self.model_dump(exclude={"mode"}))


class AnalysisSection(StrictModel):
    epsilon: float = Field(0.02, ge=0)
    epsilon_mode: Literal["absolute", "relative"] = "absolute"
    reference: Literal["best", "full"] = "full"  # falls back to "best" (and says so) without a full-pool trial


class SweepConfig(StrictModel):
    """Everything one sweep needs; ``s1ray sweep --config FILE key=value ...``."""

    name: str = "sweep"
    pool: str  # the scored pool (Parquet file or folder), scored once before the sweep
    space: SearchSpace = Field(default_factory=SearchSpace)
    search: SearchSection = Field(default_factory=SearchSection)
    selection: SelectionParams = Field(default_factory=SelectionParams)
    # A trial's training (one Train run, one lr schedule) is split into `stages` equal parts by
    # optimizer steps; after each part the model is evaluated on the training workers and the score
    # reported, so ASHA can stop weak trials early.
    stages: int = Field(1, ge=1)
    intermediate_limit: int | None = Field(None, ge=1)  # questions per benchmark in non-final evaluations
    # HF rows per batch of the intermediate (in-training) evaluations in evaluate.mode "exported",
    # whose generation.batch_size is the vLLM engine's; default: generation.batch_size
    intermediate_batch_size: int | None = Field(None, ge=1)
    asha: ASHASection = Field(default_factory=ASHASection)
    metric: str = "accuracy"  # what to optimise (see s1ray.evaluate.metrics.score_from_summary)
    metric_mode: Literal["max", "min"] = "max"
    analysis: AnalysisSection = Field(default_factory=AnalysisSection)
    train: TrainConfig
    evaluate: SweepEvaluateConfig
    storage_path: str = "outputs/sweeps"  # the sweep lives in <storage_path>/<name>
    resume: bool = True  # an existing sweep of the same name is restored (finished trials kept)
    max_failures: int = Field(1, ge=0)  # retries per trial (Tune FailureConfig)
    max_concurrent_trials: int | None = Field(None, ge=1)  # None: as many as the cluster's CPUs fit
    keep_models: bool = False  # keep each trial's final model in trials/<id>/model (~0.5 GB per 135M model)
    keep_train_checkpoints: bool = False  # keep each trial's Ray Train run folder (checkpoints, TensorBoard)
    forbid_scoring_modules: bool = True  # trials refuse to import the curation model stages
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="before")
    @classmethod
    def _trial_placeholders(cls, data: Any) -> Any:
        """The trial fills train.data and evaluate's model: users need not write them."""
        if isinstance(data, dict):
            data = dict(data)
            train = dict(data.get("train") or {})
            train.setdefault("data", dict(_TRIAL_DATA))
            # Trials evaluate on their Train workers (see evaluate.in_training.require_full_weights).
            train["deepspeed"] = {"zero_stage": 2, **dict(train.get("deepspeed") or {})}
            data["train"] = train
            ev = dict(data.get("evaluate") or {})
            gen = dict(ev.get("generation") or {})
            gen.setdefault("model", _TRIAL_MODEL)
            ev["generation"] = gen
            data["evaluate"] = ev
        return data

    @model_validator(mode="after")
    def _trial_can_run(self) -> "SweepConfig":
        from s1ray.evaluate.in_training import require_full_weights

        backend = self.evaluate.generation.backend
        if self.evaluate.mode == "in_training":
            require_full_weights(self.train.deepspeed.zero_stage)  # trials evaluate on their Train workers
            if backend != "hf":
                raise ValueError("sweep trials with evaluate.mode in_training evaluate the model being trained with "
                                 f"the hf backend; got evaluate.generation.backend={backend!r} (set evaluate.mode: "
                                 "exported to evaluate the exported weights with vllm)")
        else:
            if self.stages > 1:
                require_full_weights(self.train.deepspeed.zero_stage)  # intermediate evaluations stay in training
            if backend not in ("vllm", "hf"):
                raise ValueError(f"evaluate.mode exported runs the exported weights on the vllm (or hf) backend; got "
                                 f"evaluate.generation.backend={backend!r}")
            self._evaluation_fits_the_trial()
        if self.asha.enabled and self.stages < 2:
            raise ValueError("asha.enabled needs stages >= 2 (an intermediate evaluation to stop on)")
        if self.asha.enabled and self.asha.grace_period >= self.stages:
            raise ValueError(f"asha.grace_period {self.asha.grace_period} must be < stages {self.stages}")
        return self

    def _evaluation_fits_the_trial(self) -> None:
        """An exported evaluation takes what the trial's Train workers released, no more, so the
        trials the sweep runs side by side (sized by their Train workers) never wait on each other."""
        from s1ray.resources import Resources

        gen, train = self.evaluate.generation, trial_resources(self)
        pool = Resources.of(gen)
        need = {"CPU": pool.cpus_at_most, "GPU": pool.num_gpus * pool.max_actors}
        for res, n in need.items():
            if n > train[res] + 1e-9:
                raise ValueError(
                    f"evaluate.generation asks for {n:g} {res}s ({pool.max_actors} actors x num_{res.lower()}s "
                    f"{getattr(gen, 'num_' + res.lower() + 's'):g}) but a trial's Train workers hold {train[res]:g}: in "
                    "evaluate.mode exported the evaluation runs on the trial's own resources")
        if train["GPU"] and not need["GPU"] and gen.backend == "vllm":
            raise ValueError("evaluate.generation.num_gpus is 0 but the trial trains on GPUs: its vLLM evaluation "
                             "would run on CPUs; set num_gpus (per engine) and concurrency (engines)")


def trial_grid(cfg: SweepConfig) -> list[dict[str, Any]]:
    """The trials to run, each a dict of criterion/size/seed (+ lr/epochs when searched)."""
    sp = cfg.space
    extra = {k: v for k, v in (("lr", sp.lr), ("epochs", sp.epochs)) if v}
    trials, seen = [], set()
    for size, criterion, seed, *vals in itertools.product(sp.sizes, sp.criteria, sp.seeds, *extra.values()):
        if size == FULL:
            criterion = FULL  # the same set whichever criterion picked it
        t = {"criterion": criterion, "size": size, "seed": seed, **dict(zip(extra, vals))}
        key = tuple(sorted(t.items(), key=lambda kv: kv[0]))
        if key not in seen:
            seen.add(key)
            trials.append(t)
    if cfg.search.kind == "random":
        rng = random.Random(cfg.search.seed)
        trials = rng.sample(trials, min(cfg.search.num_samples, len(trials)))
    return trials


def trial_resources(cfg: SweepConfig) -> dict[str, float]:
    """CPUs/GPUs one trial holds: its Train workers (which also run its evaluations)."""
    t = cfg.train
    return {"CPU": t.num_workers * t.cpus_per_worker, "GPU": float(t.num_workers) if t.use_gpu else 0.0}


def trial_cpus(cfg: SweepConfig) -> float:
    return trial_resources(cfg)["CPU"]


def concurrent_trials(cfg: SweepConfig, cluster: float | dict[str, float] | None, n_trials: int | None = None) -> int:
    """As many trials as fit side by side (CPUs and GPUs), so no trial's workers wait on another's.

    ``cluster`` is what the cluster can hold: what it has now if it cannot grow, its node
    types' maximum if it can, ``None`` when it can grow without a known limit: then every
    trial (up to ``max_concurrent_trials``) is started and the autoscaler adds the nodes.
    """
    if cluster is None:
        every = n_trials or 1
        return min(every, cfg.max_concurrent_trials) if cfg.max_concurrent_trials else every
    cluster = {"CPU": cluster} if isinstance(cluster, (int, float)) else cluster
    fit = math.inf
    for res, need in trial_resources(cfg).items():
        if need > 0:
            fit = min(fit, math.floor(cluster.get(res, 0.0) / need + 1e-9))
    fit = max(1, int(fit)) if fit != math.inf else 1
    return min(fit, cfg.max_concurrent_trials) if cfg.max_concurrent_trials else fit
