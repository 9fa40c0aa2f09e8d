"""The DeepSpeed config dict, built from TrainConfig (no JSON files to keep in sync)."""

from __future__ import annotations

from typing import Any

from s1ray.train.config import TrainConfig


def resolve_dtype(cfg: TrainConfig, on_gpu: bool) -> str:
    """bf16 where the hardware has it (GPU with bf16, or a CPU with AVX-512 bf16/AMX), else fp32."""
    if cfg.dtype != "auto":
        return cfg.dtype
    import torch

    if on_gpu:
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    try:
        return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
    except (AttributeError, RuntimeError):
        return "float32"


def uses_deepspeed_optimizer(cfg: TrainConfig) -> bool:
    """DeepSpeed's own AdamW (FusedAdam on GPU, CPUAdam with offload) or torch.optim.AdamW.

    On CPU without offload torch's AdamW avoids the JIT build of cpu_adam/fused_adam.
    Offloading the optimizer needs DeepSpeedCPUAdam.
    """
    if cfg.deepspeed.optimizer == "torch" and cfg.deepspeed.offload_optimizer:
        raise ValueError("deepspeed.offload_optimizer needs deepspeed.optimizer: deepspeed (DeepSpeedCPUAdam)")
    if cfg.deepspeed.optimizer != "auto":
        return cfg.deepspeed.optimizer == "deepspeed"
    return cfg.use_gpu or cfg.deepspeed.offload_optimizer


def engine_zero_stage(cfg: TrainConfig, dtype: str) -> int:
    """The ZeRO stage the engine runs: the configured one, or 0 (no ZeRO) for one float32 worker without offload.

    One rank has nothing to partition, and ZeRO-1/2's per-parameter gradient copies and flat
    buffers cost ~8% more CPU per step than plain PyTorch (SmolLM2-135M, 1 thread: 10.85 vs
    10.07 CPU-s per step; without ZeRO 9.95). bf16 keeps ZeRO (its fp32 master weights live there).
    """
    ds = cfg.deepspeed
    if (cfg.num_workers == 1 and not (ds.offload_optimizer or ds.offload_params) and dtype == "float32"
            and not ds.zero_with_one_worker):
        return 0
    return ds.zero_stage


def build_ds_config(cfg: TrainConfig, dtype: str) -> dict[str, Any]:
    layout = cfg.batch_layout()
    ds = cfg.deepspeed
    stage = engine_zero_stage(cfg, dtype)
    overlap = ds.overlap_comm if ds.overlap_comm is not None else cfg.use_gpu
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": overlap,
        "contiguous_gradients": True,
        "reduce_bucket_size": ds.reduce_bucket_size,
    }
    if stage == 0:
        zero = {"stage": 0}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cfg.use_gpu}
    if stage == 3:
        zero.update({"stage3_gather_16bit_weights_on_model_save": True,
                     "stage3_prefetch_bucket_size": ds.reduce_bucket_size,
                     "stage3_param_persistence_threshold": 10_000})
        if ds.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": cfg.use_gpu}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": layout["micro_batch_size"],
        "gradient_accumulation_steps": layout["gradient_accumulation"],
        "train_batch_size": layout["global_batch_size"],
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if uses_deepspeed_optimizer(cfg):
        config["optimizer"] = {"type": "AdamW", "params": {
            "lr": cfg.lr, "betas": [cfg.adam_beta1, cfg.adam_beta2], "eps": cfg.adam_eps,
            "weight_decay": cfg.weight_decay}}
    return config
