"""Typed config of one fine-tuning run, with the s1 paper's hyperparameters as defaults.

s1 (Muennighoff et al., 2025): 5 epochs, lr 1e-5, linear warmup over 5% of the steps then
cosine decay to 0, AdamW (0.9, 0.95), weight decay 1e-4, global batch 16, bf16, block
size 32,768. The global batch is micro-batch x gradient accumulation x workers; give any
two of ``global_batch_size``/``gradient_accumulation`` and the rest is worked out
(:meth:`TrainConfig.batch_layout`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from s1ray.config import ConfigError, RayConfig, StrictModel
from s1ray.io.readers import SourceConfig


class DelimiterConfig(StrictModel):
    """How the assistant turn is laid out; s1 used Qwen's ``<|im_start|>`` tokens."""

    think: str = "<|im_start|>think\n"
    answer: str = "\n<|im_start|>answer\n"
    system_prompt: str | None = None  # None: whatever the chat template adds by itself
    # the text after the answer delimiter: the teacher's attempt (s1), the reference solution, or
    # the short reference answer; falls back to the others in that order when empty
    answer_field: Literal["attempt", "solution", "answer"] = "attempt"
    # s1 (data/tokenization.py): every trace of the row joined by newlines, "Answer: " put before
    # the attempt when it holds no "Answer:", the question as is. s1ray: the first trace (a row's
    # traces are alternatives from different teachers), the attempt as is, the question stripped.
    format: Literal["s1ray", "s1"] = "s1ray"


class DeepSpeedSection(StrictModel):
    zero_stage: Literal[2, 3] = 3
    offload_optimizer: bool = False  # optimizer state on CPU (DeepSpeedCPUAdam)
    offload_params: bool = False  # ZeRO-3 only: parameters on CPU
    optimizer: Literal["auto", "torch", "deepspeed"] = "auto"  # auto: torch AdamW on CPU without offload
    reduce_bucket_size: int = 50_000_000
    overlap_comm: bool | None = None  # None: on with GPUs, off on CPU
    # one float32 worker without offload runs the engine without ZeRO (nothing to partition);
    # true keeps zero_stage there too (e.g. to measure ZeRO's own memory at one rank)
    zero_with_one_worker: bool = False

    @model_validator(mode="after")
    def _offload_params_needs_zero3(self) -> "DeepSpeedSection":
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage: 3")
        return self


class LoggingConfig(StrictModel):
    tensorboard: bool = True
    tensorboard_dir: str | None = None  # default: <storage_path>/<run>/tensorboard when storage is local
    mlflow_tracking_uri: str | None = None  # set to log to MLflow (needs `pip install mlflow`)
    mlflow_experiment: str = "s1ray"
    wandb_project: str | None = None  # set to log to W&B (needs `pip install wandb`, WANDB_API_KEY)
    progress_bar: bool = True


class TrainConfig(StrictModel):
    """Everything one run needs; ``s1ray train --config FILE key=value ...``."""

    data: SourceConfig
    model: str  # tiny:<preset>, packaged:<name>, hub id or local folder (s1ray.models.loading)
    trust_remote_code: bool = False
    output_dir: str | None = None  # exported HF folder; default <storage_path>/<run_name>/model
    delimiters: DelimiterConfig = Field(default_factory=DelimiterConfig)

    # --- s1 hyperparameters ---
    epochs: int = Field(5, ge=1)
    lr: float = Field(1e-5, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    # token_mean: mean over the global batch's supervised tokens (long traces weigh more);
    # example_mean: per-example mean, then mean over examples (s1: one example per device)
    loss_reduction: Literal["token_mean", "example_mean"] = "token_mean"
    # How the loss is computed (s1ray.train.loss; docs/paper-scale.md "The loss at long context").
    # full: the model's logits, tokens x vocab at once (~14 bytes per entry at the backward peak in
    # bf16: ~70 GB for 32,768 tokens x Qwen2.5's 152,064). chunked: from the last hidden states,
    # loss_chunk_tokens rows of fp32 logits at a time, recomputed in backward. liger: Liger-Kernel's
    # fused linear cross entropy (CUDA, liger-kernel>=0.8.2). auto: full while micro_batch_size x
    # block_size x vocab < 2^27, else liger on CUDA when it imports, else chunked.
    loss_impl: Literal["auto", "full", "chunked", "liger"] = "auto"
    # 1024: the chunk's fp32 logits (~6 bytes per entry in bf16) are 0.9 GB at Qwen2.5's vocabulary,
    # small beside the 4.7 GB weight-gradient buffers, and a 1024 x 5120 x 152,064 matmul keeps a GPU busy;
    # at 4,096 tokens the loss step's peak is ~11x below the full logits' (tests/train/test_loss.py).
    loss_chunk_tokens: int = Field(1024, ge=1)
    global_batch_size: int | None = 16  # rows per optimizer step (examples, or packed sequences)
    micro_batch_size: int = Field(1, ge=1)  # rows per worker per forward pass
    gradient_accumulation: int | None = None  # None: worked out from global_batch_size
    block_size: int = Field(32_768, ge=8)  # longer examples are truncated, counted and reported
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"  # auto: bf16 where the hardware has it
    seed: int = 0

    # --- efficiency ---
    # pack sequences / group by length / naive / balance: group, and every rank's k-th micro-batch of a
    # step about as long as the others' (fewer waits for the slowest rank; s1.1 traces: 23K max vs 9.5K mean)
    batching: Literal["pack", "group", "pad", "balance"] = "pack"
    group_size_multiplier: int = Field(16, ge=1)  # "group"/"balance": sort within chunks of this many steps
    gradient_checkpointing: bool = False
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection)

    # --- Ray Train ---
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    torch_threads: int | None = None  # default: cpus_per_worker (Ray sets OMP_NUM_THREADS=1)
    storage_path: str = "outputs/train"  # local folder (relative: to where you run), or s3:// gs:// for multi-node
    storage_is_shared: bool = False  # set when a local-looking storage_path is an NFS mount on every node
    run_name: str | None = None  # same name again = resume; default derived from model and data
    # When to checkpoint: every checkpoint_every_steps optimizer steps and/or at the end of every
    # checkpoint_every_epochs epochs (null turns either off). At 32B a checkpoint costs minutes to an
    # hour of I/O (docs/paper-scale.md "Checkpoints and storage at 32B"), so those configs save once
    # per epoch: checkpoint_every_steps: null, checkpoint_every_epochs: 1.
    checkpoint_every_steps: int | None = Field(50, ge=1)
    checkpoint_every_epochs: int | None = Field(None, ge=1)
    # Checkpoint policy. Ray keeps the newest num_to_keep checkpoints (the final one counts) and
    # deletes older ones. Intermediate checkpoints hold the full DeepSpeed state (weights, optimizer
    # moments, schedule, data position) so a resume is exact; with checkpoint_optimizer_state: false
    # they hold the consolidated weights only (about 1/7 of the size with AdamW in bf16) and a
    # resume restarts Adam's moments from zero. The final checkpoint is always model-only.
    num_to_keep: int = Field(2, ge=1)
    checkpoint_optimizer_state: bool = True
    max_failures: int = Field(1, ge=0)
    metrics_every_steps: int = Field(10, ge=1)  # ray.train.report is throttled in V2: not every step
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _liger_needs_gpu(self) -> "TrainConfig":
        if self.loss_impl == "liger" and not self.use_gpu:
            raise ValueError("loss_impl: liger runs Triton kernels on CUDA only; set use_gpu: true or use "
                             "loss_impl: chunked")
        return self

    @model_validator(mode="after")
    def _batch_is_consistent(self) -> "TrainConfig":
        if self.global_batch_size is None and self.gradient_accumulation is None:
            raise ValueError("give global_batch_size or gradient_accumulation")
        self.batch_layout()  # raises with the arithmetic spelled out
        return self

    def batch_layout(self) -> dict[str, int]:
        """micro x accumulation x workers = global batch, or a ConfigError that shows the numbers."""
        per_pass = self.micro_batch_size * self.num_workers
        if self.gradient_accumulation is not None:
            accum = self.gradient_accumulation
            if self.global_batch_size is not None and self.global_batch_size != per_pass * accum:
                raise ConfigError(
                    f"global_batch_size={self.global_batch_size} != micro_batch_size {self.micro_batch_size} x "
                    f"gradient_accumulation {accum} x num_workers {self.num_workers} = {per_pass * accum}")
        else:
            assert self.global_batch_size is not None
            if self.global_batch_size % per_pass:
                raise ConfigError(
                    f"global_batch_size={self.global_batch_size} is not a multiple of micro_batch_size "
                    f"{self.micro_batch_size} x num_workers {self.num_workers} = {per_pass}; change one of them "
                    "or set gradient_accumulation")
            accum = self.global_batch_size // per_pass
        return {"micro_batch_size": self.micro_batch_size, "gradient_accumulation": accum,
                "num_workers": self.num_workers, "global_batch_size": per_pass * accum}

    def is_checkpoint_step(self, done: int, steps_per_epoch: int) -> bool:
        """Whether an intermediate checkpoint follows optimizer step ``done`` (1-based)."""
        if self.checkpoint_every_steps and done % self.checkpoint_every_steps == 0:
            return True
        return bool(self.checkpoint_every_epochs) and done % (steps_per_epoch * self.checkpoint_every_epochs) == 0

    def resolved_run_name(self) -> str:
        if self.run_name:
            return self.run_name
        raw = f"sft-{self.model.split('/')[-1]}-{self.data.name}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw)

    def storage_is_local(self) -> bool:
        return "://" not in self.storage_path

    def resolved_storage_path(self) -> str:
        return str(Path(self.storage_path).expanduser().resolve()) if self.storage_is_local() else self.storage_path

    def resolved_output_dir(self) -> str:
        if self.output_dir:
            return str(Path(self.output_dir).expanduser().resolve())
        if not self.storage_is_local():
            raise ConfigError("storage_path is remote: set output_dir to a local folder for the exported model")
        return str(Path(self.resolved_storage_path()) / self.resolved_run_name() / "model")
