"""``plan_train(cfg, hw) -> TrainPlan``: will a training config fit, how long will it take, and if
it does not fit, which settings would (each re-planned).

The plan sizes the worst micro-batch (every row block_size tokens long): that is what must
fit. Times use the mean example length when given (``mean_tokens``), else block_size (an upper
bound). See :mod:`s1ray.plan.memory` and :mod:`s1ray.plan.timing` for the arithmetic.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from s1ray.plan.hardware import GiB, Hardware, detected_gpu, hardware
from s1ray.plan.memory import DEFAULT_LOSS_CHUNK_TOKENS, Memory, Setup, memory
from s1ray.plan.shapes import ModelShape, PlanError, model_shape
from s1ray.plan.timing import ASSUMED_HFU, CPU_HFU, Timing, run_steps, timing

# Row counts of hub datasets the planner is asked about without network access.
KNOWN_DATASETS = {"simplescaling/s1K": 1000, "simplescaling/s1K-1.1": 1000, "simplescaling/s1K_tokenized": 1000}


@dataclass
class Suggestion:
    """Config overrides (``key=value``) that make the plan fit, with the re-planned peak."""

    overrides: dict[str, Any]
    peak_bytes: int
    fits: bool
    note: str = ""

    def as_args(self) -> str:
        return " ".join(f"{k}={json.dumps(v) if isinstance(v, bool) else v}" for k, v in self.overrides.items())


@dataclass
class TrainPlan:
    """One run on ``hardware``: per-device memory, step time, MFU, wall time and GPU-hours."""

    model: str
    params: int
    hardware: Hardware
    setup: Setup
    memory: Memory
    timing: Timing
    n_examples: int | None
    row_tokens: float
    suggestions: list[Suggestion] = field(default_factory=list)

    @property
    def capacity(self) -> int:
        return self.hardware.memory_bytes

    @property
    def peak(self) -> int:
        return self.memory.peak

    @property
    def fits(self) -> bool:
        return self.peak <= self.capacity

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: bytes as GiB, times in seconds."""
        gib = lambda b: round(b / GiB, 2)  # noqa: E731
        t = self.timing
        return {
            "model": self.model, "params": self.params, "hardware": asdict(self.hardware), "setup": asdict(self.setup),
            "fits": self.fits, "peak_gib": gib(self.peak), "capacity_gib": gib(self.capacity),
            "peak_phase": self.memory.peak_phase,
            "components_gib": {k: gib(v) for k, v in self.memory.components.items()},
            "phases_gib": {k: gib(v) for k, v in self.memory.phases.items()},
            "activations_without_checkpointing_gib": gib(self.memory.no_checkpointing_activations),
            "step_seconds": round(t.step_s, 3), "compute_seconds": round(t.compute_s, 3),
            "comm_seconds": round(t.comm_s, 3), "mfu": round(t.mfu, 3), "steps": t.steps,
            "checkpoint_seconds": None if t.checkpoint_s is None else round(t.checkpoint_s, 1),
            "wall_seconds": None if t.wall_s is None else round(t.wall_s, 1),
            "device_hours": None if t.device_hours is None else round(t.device_hours, 2),
            "n_examples": self.n_examples, "row_tokens": self.row_tokens,
            "assumptions": assumptions(self.hardware, self.setup.dtype),
            "suggestions": [{"overrides": s.overrides, "peak_gib": gib(s.peak_bytes), "fits": s.fits, "note": s.note}
                            for s in self.suggestions],
        }


def assumptions(hw: Hardware, dtype: str = "bfloat16") -> dict[str, Any]:
    peak = hw.peak_flops_bf16 if dtype == "bfloat16" else hw.peak_flops_fp32
    return {"hfu": ASSUMED_HFU if hw.kind == "gpu" else CPU_HFU, "dtype": dtype, "peak_tflops": peak / 1e12,
            "comm_gbps_per_device": hw.comm_bw() / 1e9, "storage_gbps": hw.storage_bw / 1e9,
            "allocator_reserve": 0.05 if hw.kind == "gpu" else 0.0, "context_gib": hw.context_bytes / GiB}


def setup_from_config(cfg: Any, on_gpu: bool) -> Setup:
    """The settings of a TrainConfig the plan depends on (dtype and ZeRO stage as the trainer resolves them)."""
    from s1ray.train.deepspeed_config import engine_zero_stage

    dtype = cfg.dtype
    if dtype == "auto":
        if on_gpu:
            dtype = "bfloat16"  # every GPU in the table has bf16
        else:
            from s1ray.train.deepspeed_config import resolve_dtype

            dtype = resolve_dtype(cfg, False)
    ds = cfg.deepspeed
    layout = cfg.batch_layout()
    return Setup(block_size=cfg.block_size, micro_batch_size=cfg.micro_batch_size,
                 gradient_accumulation=layout["gradient_accumulation"], num_workers=cfg.num_workers,
                 zero_stage=engine_zero_stage(cfg, dtype), offload_optimizer=ds.offload_optimizer,
                 offload_params=ds.offload_params, gradient_checkpointing=cfg.gradient_checkpointing, dtype=dtype,
                 loss_impl=resolve_loss_impl(getattr(cfg, "loss_impl", "full"), on_gpu),
                 loss_chunk_tokens=getattr(cfg, "loss_chunk_tokens", DEFAULT_LOSS_CHUNK_TOKENS),
                 reduce_bucket_size=ds.reduce_bucket_size, prefetch_bucket_size=ds.reduce_bucket_size,
                 overlap_comm=ds.overlap_comm if ds.overlap_comm is not None else on_gpu)


def resolve_loss_impl(impl: str, on_gpu: bool) -> str:
    """``auto``: Liger's fused kernel on GPUs where liger-kernel is installed, else the chunked loss."""
    if impl != "auto":
        return impl
    import importlib.util

    return "liger" if on_gpu and importlib.util.find_spec("liger_kernel") is not None else "chunked"


def count_examples(cfg: Any) -> int | None:
    """Rows the run trains on, without reading them: the limit, a local file's row count, or a known hub set."""
    data, n = cfg.data, None
    if data.path and Path(data.path).expanduser().is_file():
        path = Path(data.path).expanduser()
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            n = pq.ParquetFile(path).metadata.num_rows
        elif path.suffix in (".jsonl", ".json", ".csv"):
            with open(path, "rb") as f:
                n = sum(1 for line in f if line.strip()) - (1 if path.suffix == ".csv" else 0)
    elif data.hub_id in KNOWN_DATASETS:
        n = KNOWN_DATASETS[data.hub_id]
    if data.limit is not None:
        n = data.limit if n is None else min(n, data.limit)
    return n


def hardware_for(cfg: Any, gpu: str | None = None, gpus: int | None = None,
                 gpus_per_node: int | None = None) -> Hardware:
    """The hardware a TrainConfig runs on: its workers' GPUs (the named type, else what Ray advertises,
    else H100 80GB, the shipped cluster's), or this machine's CPUs and RAM."""
    n = gpus or cfg.num_workers
    if gpu == "cpu" or (gpu is None and not cfg.use_gpu):
        return hardware("cpu", n, gpus_per_node, threads_per_worker=max(1, int(cfg.torch_threads or cfg.cpus_per_worker)))
    return hardware(gpu or detected_gpu() or "h100-80gb", n, gpus_per_node)


def plan(shape: ModelShape, setup: Setup, hw: Hardware, *, n_examples: int | None = None,
         mean_tokens: float | None = None, batching: str = "pad", global_batch: int | None = None,
         epochs: int = 1, checkpoint_every_steps: int | None = None, checkpoint_optimizer_state: bool = True,
         suggest: bool = True) -> TrainPlan:
    """The plan of ``setup`` on ``hw`` (the function ``plan_train`` and a sweep's planner call)."""
    mean = min(float(mean_tokens or setup.block_size), setup.block_size)
    row_tokens = setup.block_size if batching == "pack" else mean
    global_batch = global_batch or setup.micro_batch_size * setup.gradient_accumulation * setup.num_workers
    steps = None if n_examples is None else run_steps(n_examples, mean, setup.block_size, batching, global_batch, epochs)
    ckpts: list[int] = []
    if steps:
        every = checkpoint_every_steps or steps
        state = shape.params * (setup.dtype_bytes + (12 if checkpoint_optimizer_state else 0))
        ckpts = [state] * ((steps - 1) // every) + [shape.params * setup.dtype_bytes]
    mem = memory(shape, setup, hw)
    t = timing(shape, setup, hw, row_tokens=row_tokens, steps=steps, checkpoint_bytes=ckpts)
    out = TrainPlan(shape.name, shape.params, hw, setup, mem, t, n_examples, row_tokens)
    if suggest and not out.fits:
        out.suggestions = suggestions(shape, setup, hw, global_batch)
    return out


def plan_train(cfg: Any, hw: Hardware | None = None, *, n_examples: int | None = None,
               mean_tokens: float | None = None, loss_impl: str | None = None) -> TrainPlan:
    """Plan a TrainConfig on ``hw`` (default: :func:`hardware_for`). ``loss_impl`` overrides the config's."""
    hw = hw or hardware_for(cfg)
    if hw.devices != cfg.num_workers:
        cfg = cfg.model_copy(update={"num_workers": hw.devices})
        if cfg.global_batch_size is not None and cfg.gradient_accumulation is None:
            per_pass = cfg.micro_batch_size * hw.devices
            cfg = cfg.model_copy(update={"global_batch_size": max(per_pass, cfg.global_batch_size // per_pass * per_pass)})
    setup = setup_from_config(cfg, hw.kind == "gpu")
    if loss_impl:
        setup = replace(setup, loss_impl=resolve_loss_impl(loss_impl, hw.kind == "gpu"))
    return plan(model_shape(cfg.model, cfg.trust_remote_code), setup, hw,
                n_examples=n_examples if n_examples is not None else count_examples(cfg), mean_tokens=mean_tokens,
                batching=cfg.batching, global_batch=cfg.batch_layout()["global_batch_size"], epochs=cfg.epochs,
                checkpoint_every_steps=cfg.checkpoint_every_steps,
                checkpoint_optimizer_state=cfg.checkpoint_optimizer_state)


def suggestions(shape: ModelShape, setup: Setup, hw: Hardware, global_batch: int) -> list[Suggestion]:
    """Single changes that make ``setup`` fit, each re-planned; if none does, the changes combined; and
    the largest block_size that fits (with the other changes, when they are needed)."""
    def peak(s: Setup, h: Hardware = hw) -> int:
        return memory(shape, s, h).peak

    def fits(s: Setup, h: Hardware = hw) -> bool:
        return peak(s, h) <= h.memory_bytes

    candidates: list[tuple[dict[str, Any], Setup, Hardware, str]] = []
    if setup.loss_impl == "full":
        candidates.append(({"loss_impl": "chunked"}, replace(setup, loss_impl="chunked"), hw,
                           "cross-entropy in chunks of loss_chunk_tokens (branch h/loss)"))
    if not setup.gradient_checkpointing:
        candidates.append(({"gradient_checkpointing": True}, replace(setup, gradient_checkpointing=True), hw, ""))
    if setup.micro_batch_size > 1:
        accum = setup.gradient_accumulation * setup.micro_batch_size
        candidates.append(({"micro_batch_size": 1}, replace(setup, micro_batch_size=1, gradient_accumulation=accum),
                           hw, "same global batch through more accumulation"))
    if setup.zero_stage in (0, 2) and setup.num_workers > 1:
        candidates.append(({"deepspeed.zero_stage": 3}, replace(setup, zero_stage=3), hw, ""))
    if setup.zero_stage in (2, 3) and not setup.offload_optimizer and hw.kind == "gpu":
        candidates.append(({"deepspeed.offload_optimizer": True, "deepspeed.optimizer": "deepspeed"},
                           replace(setup, offload_optimizer=True), hw, "Adam on the CPU: slower steps"))
    if setup.zero_stage == 3 and not setup.offload_params and hw.kind == "gpu":
        candidates.append(({"deepspeed.offload_params": True}, replace(setup, offload_params=True), hw,
                           "weights on the CPU: much slower steps"))
    if hw.kind == "gpu":
        for factor in (2, 4):
            n = setup.num_workers * factor
            over = {"num_workers": n}
            if global_batch % (n * setup.micro_batch_size):
                over["global_batch_size"] = n * setup.micro_batch_size
            candidates.append((over, replace(setup, num_workers=n, gradient_accumulation=1), replace(hw, devices=n),
                               "changes the global batch (the recipe)" if "global_batch_size" in over else ""))
    out = [Suggestion(o, peak(s, h), fits(s, h), note) for o, s, h, note in candidates]
    single = [x for x in out if x.fits]
    if not single:  # no single change is enough: the cheap ones together (not more GPUs)
        combined, over = setup, {}
        for o, s, h, _ in candidates:
            if h.devices == hw.devices:
                combined = replace(combined, **{k: getattr(s, k) for k in
                                                ("loss_impl", "gradient_checkpointing", "micro_batch_size",
                                                 "gradient_accumulation", "zero_stage", "offload_optimizer",
                                                 "offload_params") if getattr(s, k) != getattr(setup, k)})
                over.update(o)
        if over:
            single.append(Suggestion(over, peak(combined), fits(combined), "all of the above together"))
        base, base_over = combined, dict(over)
    else:
        base, base_over = setup, {}
    block = _largest_block(lambda b: fits(replace(base, block_size=b)), base.block_size)
    if block:
        single.append(Suggestion({**base_over, "block_size": block}, peak(replace(base, block_size=block)), True,
                                 "longer examples are truncated"))
    return single


def _largest_block(fits_at, block: int) -> int | None:
    """The largest multiple of 1,024 below ``block`` at which ``fits_at(block)``; None if even 1,024 does not fit."""
    lo, hi = 1, math.ceil(block / 1024) - 1  # in units of 1,024 tokens
    if hi < 1 or not fits_at(1024):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits_at(mid * 1024):
            lo = mid
        else:
            hi = mid - 1
    return lo * 1024
