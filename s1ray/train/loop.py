"""The per-worker training recipe: DeepSpeed ZeRO inside a Ray Train worker, in named phases.

:class:`SFTRecipe` runs ``setup`` (data, model, engine, resume) -> ``step`` (one optimizer
step) -> ``report`` (metrics, in-training evaluation) -> ``checkpoint`` / ``finish`` (the
final, model-only checkpoint), reading a typed :class:`LoopConfig`. Tests and benchmarks
observe or perturb it through :class:`s1ray.train.hooks.TrainHooks`; production passes none.

Every rank holds the whole (small) tokenised row table and computes the same batch plan
(:func:`s1ray.train.data.epoch_plan`), so the data position is just the global step: a
resumed run loads the checkpoint and continues at the next step, skipping and repeating
nothing. The loss is the token-weighted mean over the whole global batch (``loss_reduction:
token_mean``) or s1's mean of per-example means (``example_mean``, :mod:`s1ray.train.loss`);
every rank knows how many target tokens and examples the step holds, so neither depends on how
the batch is split across workers and micro-batches.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from s1ray.train.config import TrainConfig
from s1ray.train.data import IGNORE, collate, epoch_plan, steps_per_epoch
from s1ray.train.hooks import StepRecord, TrainHooks
from s1ray.train.loss import example_counts, lm_loss
from s1ray.train.optim import lr_lambda, param_groups, torch_adamw

CKPT_TAG = "ds"
SUMMARY_FILE = "train_summary.json"  # in the final checkpoint: the run is finished
RESUME_FILE = "resume_state.json"  # in a model-only checkpoint: where to go on from
MODEL_DIR = "hf_model"


@dataclass
class DataInfo:
    """What the driver learnt about the data, passed to every worker."""

    fingerprint: str  # a resumed run refuses a checkpoint written for other data
    pad_id: int
    vocab_size: int
    stats: dict[str, Any]  # data/... figures added to every report


@dataclass
class LoopConfig:
    """Everything one worker's loop reads; built by :func:`s1ray.train.trainer.build_trainer`."""

    train: TrainConfig
    run_name: str
    data: DataInfo
    tensorboard_dir: str | None = None
    quarantine_file: str | None = None
    evaluation: Any = None  # an s1ray.evaluate.in_training.InTrainingEval, or None
    export: bool = True  # False: the final checkpoint holds the summary only (no weights)
    report_also: dict[str, Any] = field(default_factory=dict)  # added to every report (a sweep's trial keys)
    resume_from: str | None = None  # a checkpoint folder to start from when Ray Train has none
    hooks: Sequence[TrainHooks] = ()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's entry point: ``config = {"loop": LoopConfig}``."""
    recipe = SFTRecipe(config["loop"])
    try:
        if recipe.setup():
            recipe.train()
    finally:
        recipe.cleanup()


def _load_model(cfg: TrainConfig, ds_config: dict, dtype: str, vocab_size: int, source: str | None = None):
    """The model (from ``source``, a checkpoint's HF folder, when given); under ZeRO-3 loaded straight
    into partitions (zero.Init)."""
    from s1ray.models.loading import build_tiny_model, load_model

    hf_ds_config = None
    if ds_config["zero_optimization"]["stage"] == 3:
        # zero.Init patches torch.Tensor.__new__; torch._dynamo (imported lazily by transformers'
        # masking utils) fails to import under that patch, so import it first.
        import torch._dynamo  # noqa: F401
        import transformers.masking_utils  # noqa: F401
        from transformers import LlamaForCausalLM  # noqa: F401

        # Keeps transformers' from_pretrained in ZeRO-3 mode (zero.Init + partitioned loading).
        from transformers.integrations import HfDeepSpeedConfig

        hf_ds_config = HfDeepSpeedConfig(ds_config)
    if source is None and cfg.model.startswith("tiny:"):
        # Small by definition: built whole on every rank (same seed), partitioned by initialize.
        model = build_tiny_model(cfg.model.split(":", 1)[1], vocab_size, seed=cfg.seed)
    else:
        model = load_model(source or cfg.model, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, hf_ds_config


def _read_rows() -> dict[str, list]:
    """The whole row table from the (unsplit) Ray Dataset, in row order."""
    import pyarrow as pa
    import ray.data
    import ray.train

    ray.data.DataContext.get_current().enable_progress_bars = False
    shard = ray.train.get_dataset_shard("train")
    table = pa.concat_tables(list(shard.iter_batches(batch_size=None, batch_format="pyarrow")))
    table = table.sort_by("row")
    return {c: table.column(c).to_pylist() for c in ("input_ids", "labels", "position_ids", "example_ids")}


class SFTRecipe:
    """One worker's fine-tuning run, phase by phase (torchtune-style recipe)."""

    def __init__(self, lc: LoopConfig):
        self.lc, self.cfg = lc, lc.train
        self.hooks = list(lc.hooks)
        self.t_entry = time.time()
        self.sinks = self.bar = None
        self.metrics: dict[str, Any] = {}  # persists across reports (hook figures stay reported)

    # ---------------------------------------------------------------- set-up
    def setup(self) -> bool:
        """Data, model, engine and resume state; False when the run had already finished."""
        cfg = self.cfg
        if not cfg.use_gpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed
        import ray.train
        import torch

        from s1ray.train.deepspeed_config import build_ds_config, resolve_dtype, uses_deepspeed_optimizer

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        if not cfg.use_gpu:
            torch.set_num_threads(cfg.torch_threads or max(1, int(cfg.cpus_per_worker)))
        torch.manual_seed(cfg.seed)
        self.device = torch.device("cuda", torch.cuda.current_device()) if cfg.use_gpu else torch.device("cpu")
        # DeepSpeed adopts the process group Ray Train already set up (gloo on CPU, nccl on GPU);
        # before this, DeepSpeedConfig would see a world size of 1.
        deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")

        self.rows = _read_rows()
        self.lengths = [len(x) for x in self.rows["input_ids"]]
        if cfg.loss_reduction == "example_mean":  # the step's normaliser counts examples, not tokens
            self.targets = example_counts(self.rows["labels"], self.rows["position_ids"])
        else:
            self.targets = [sum(t != IGNORE for t in lab) for lab in self.rows["labels"]]
        self.accum = cfg.batch_layout()["gradient_accumulation"]
        self.micro_per_step = self.accum * self.world
        self.spe = steps_per_epoch(len(self.lengths), cfg.micro_batch_size, self.micro_per_step)
        self.total_steps = self.spe * cfg.epochs
        self.dtype = resolve_dtype(cfg, cfg.use_gpu)
        ds_config = build_ds_config(cfg, self.dtype)

        self.start_step = 0
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None and self.lc.resume_from:
            checkpoint = ray.train.Checkpoint(self.lc.resume_from)
        with checkpoint.as_directory() if checkpoint is not None else nullcontext(None) as d:
            folder = Path(d) if d else None
            if folder is not None and (folder / SUMMARY_FILE).exists():  # the run already finished
                ray.train.report(json.loads((folder / SUMMARY_FILE).read_text()))
                return False
            model_only = folder is not None and (folder / RESUME_FILE).exists()
            if model_only:  # weights and position only: the optimizer's moments start again from zero
                self.start_step = self._client_state(json.loads((folder / RESUME_FILE).read_text()), checkpoint)
            source = str(folder / MODEL_DIR) if model_only else None
            for h in self.hooks:
                h.before_model()
            model, _hf_ds_config = _load_model(cfg, ds_config, self.dtype, self.lc.data.vocab_size, source)
            groups = param_groups(model, cfg.weight_decay)
            optimizer = None if uses_deepspeed_optimizer(cfg) else torch_adamw(groups, cfg)
            schedule, offset = lr_lambda(self.total_steps, cfg.warmup_ratio), self.start_step
            self.engine, _, _, self.scheduler = deepspeed.initialize(
                model=model, model_parameters=groups if optimizer is None else None, optimizer=optimizer,
                lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s + offset)),
                config=ds_config, dist_init_required=False)
            if folder is not None and not model_only:
                _, client = self.engine.load_checkpoint(str(folder), tag=CKPT_TAG)
                self.start_step = self._client_state(client, checkpoint)

        if self.rank == 0:
            from s1ray.train.sinks import MetricSinks

            self.sinks = MetricSinks(cfg, self.lc.run_name, self.lc.tensorboard_dir)
            if cfg.logging.progress_bar:
                from tqdm import tqdm

                self.bar = tqdm(total=self.total_steps, initial=self.start_step, desc=f"train {self.lc.run_name}",
                                file=sys.stdout, mininterval=5.0, dynamic_ncols=True)
        self.eval_steps: set[int] = set()
        self.tokenizer = None
        if self.lc.evaluation is not None:
            from s1ray.models.loading import load_tokenizer

            self.eval_steps = set(self.lc.evaluation.steps(self.total_steps))
            self.tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
        # Where a worker's time goes (reported with every result): ready = entry to the first step
        # (data, model, DeepSpeed), steps = optimizer steps, eval = in-training evaluation.
        self.timing: dict[str, Any] = {"time/entry_unix": self.t_entry, "time/ready_s": time.time() - self.t_entry,
                                       "time/steps_s": 0.0, "time/eval_s": 0.0, "time/checkpoint_s": 0.0}
        pg = ray.util.get_current_placement_group()
        if pg is not None:  # lets a sweep release it if Tune stops the trial mid-run (see sweep.driver)
            self.timing["placement_group_id"] = pg.id.hex()
        for h in self.hooks:
            h.on_setup(self.rank, self.world)
        return True

    def _client_state(self, client: dict[str, Any], checkpoint: Any) -> int:
        if client.get("data_fingerprint") != self.lc.data.fingerprint:
            raise RuntimeError(f"checkpoint {checkpoint.path} was written for different training data "
                               "(fingerprint mismatch): use a new run_name")
        return int(client["global_step"])

    # ---------------------------------------------------------------- the loop
    def train(self) -> None:
        self._plans: dict[int, list] = {}
        self._window = {"loss": 0.0, "tokens": 0.0, "steps": 0.0}
        self._window_start = time.perf_counter()
        self.engine.train()
        for step in range(self.start_step, self.total_steps):
            t_step = time.perf_counter()
            rec = self.step(step)
            self.timing["time/steps_s"] += time.perf_counter() - t_step
            self._log_step(rec)
            for h in self.hooks:
                h.on_step_end(rec)
            done = rec.step
            last = done == self.total_steps
            want_ckpt = done % self.cfg.checkpoint_every_steps == 0 and not last
            if done % self.cfg.metrics_every_steps == 0 or want_ckpt or last or done in self.eval_steps:
                metrics = self.report_metrics(done, rec)
                if last:
                    self.finish(metrics)
                elif want_ckpt:
                    self.checkpoint(metrics, done)
                else:
                    import ray.train

                    ray.train.report(dict(metrics))
                self._window_start = time.perf_counter()

    # ---------------------------------------------------------------- step
    def step(self, step: int) -> StepRecord:
        """One optimizer step (0-based ``step``): this rank's micro-batches, then the loss all-reduce."""
        import torch
        import torch.distributed as dist

        cfg, engine = self.cfg, self.engine
        epoch, index = divmod(step, self.spe)
        if epoch not in self._plans:
            self._plans = {epoch: epoch_plan(self.lengths, cfg.batching, cfg.micro_batch_size, self.micro_per_step,
                                             epoch, cfg.seed, cfg.group_size_multiplier)}
        step_plan = self._plans[epoch][index]
        n_targets = sum(self.targets[i] for mb in step_plan for i in mb)
        lr = self.scheduler.get_last_lr()[0]
        local_loss, local_tokens = 0.0, 0
        mine = step_plan[self.rank * self.accum:(self.rank + 1) * self.accum]
        for k, mb in enumerate(mine):
            batch = {k2: v.to(self.device) for k2, v in self._batch(mb).items()}
            if cfg.loss_reduction == "token_mean":
                out = engine(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"],
                             num_items_in_batch=max(1, n_targets), use_cache=False)
                loss = out.loss if mb else out.logits.sum() * 0.0
            else:
                out = engine(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
                loss = (lm_loss(out.logits, batch["labels"], batch["position_ids"], cfg.loss_reduction, n_targets)
                        if mb else out.logits.sum() * 0.0)
            engine.backward(loss * self.micro_per_step)  # DeepSpeed averages over accumulation and ranks
            for h in self.hooks:
                self.metrics.update(h.after_backward(step + 1, k, len(mine)))
            if k == len(mine) - 1 and engine.zero_optimization_stage() == 0:  # ZeRO reports it; without, measure
                self._norm = float(torch.nn.utils.get_total_norm(
                    [p.grad for p in engine.module.parameters() if p.grad is not None]))
            engine.step()
            local_loss += float(loss.detach())
            local_tokens += sum(self.lengths[i] for i in mb)
        # On the training device: NCCL reduces CUDA tensors only (gloo takes CPU ones).
        stats = torch.tensor([local_loss, float(local_tokens)], dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(stats)
        self._epoch_pos = (epoch, index)
        return StepRecord(step=step + 1, rank=self.rank, loss=float(stats[0]), tokens=local_tokens,
                          step_tokens=int(stats[1]),
                          examples=[[self.rows["example_ids"][i] for i in mb] for mb in mine], lr=lr,
                          grad_norm=self._grad_norm())

    def _grad_norm(self) -> float:
        """The step's gradient norm before clipping (ZeRO computes it; without ZeRO, step() does)."""
        if self.engine.zero_optimization_stage() == 0:
            return self._norm
        return float(self.engine.get_global_grad_norm() or 0.0)

    def _batch(self, mb: list[int]) -> dict[str, Any]:
        import torch

        pad_id = self.lc.data.pad_id
        if mb:
            return collate([{c: self.rows[c][i] for c in ("input_ids", "labels", "position_ids")} for i in mb], pad_id)
        # the epoch's last step can leave a rank without rows: a zero-weight pass keeps ranks in step
        return {"input_ids": torch.full((1, 1), pad_id), "labels": torch.full((1, 1), IGNORE),
                "position_ids": torch.zeros((1, 1), dtype=torch.long)}

    def _log_step(self, rec: StepRecord) -> None:
        self._window["loss"] += rec.loss
        self._window["tokens"] += rec.step_tokens
        self._window["steps"] += 1
        if self.sinks:
            self.sinks.log({"loss": rec.loss, "lr": rec.lr, "grad_norm": rec.grad_norm}, rec.step)
        if self.bar:
            self.bar.set_postfix(loss=f"{rec.loss:.4f}", lr=f"{rec.lr:.2e}", refresh=False)
            self.bar.update(1)

    # ---------------------------------------------------------------- report
    def report_metrics(self, done: int, rec: StepRecord) -> dict[str, Any]:
        """The metrics of the window since the last report (and the evaluation, when one is due)."""
        epoch, index = self._epoch_pos
        elapsed = time.perf_counter() - self._window_start
        w = self._window
        self.metrics.update({"step": done, "epoch": epoch + (index + 1) / self.spe, "loss": w["loss"] / w["steps"],
                             "lr": rec.lr, "grad_norm": rec.grad_norm, "tokens_per_s": w["tokens"] / elapsed,
                             "total_steps": self.total_steps, **self.lc.data.stats})
        if self.sinks:
            self.sinks.log({"tokens_per_s": self.metrics["tokens_per_s"]}, done)
        self._window = {"loss": 0.0, "tokens": 0.0, "steps": 0.0}
        if done in self.eval_steps:
            t_eval = time.perf_counter()
            self.metrics.update(self.lc.evaluation.run(self.engine.module, self.tokenizer, done, self.total_steps,
                                                       self.rank, self.world))
            self.timing["time/eval_s"] += time.perf_counter() - t_eval
        self.metrics.update(self.timing, **self.lc.report_also, **{"time/report_unix": time.time()})
        return dict(self.metrics)

    # ---------------------------------------------------------------- checkpoint
    def checkpoint(self, metrics: dict[str, Any], done: int) -> None:
        """An intermediate checkpoint: full DeepSpeed state, or model-only (``checkpoint_optimizer_state: false``)."""
        import ray.train
        from ray.train import Checkpoint

        t_ckpt = time.perf_counter()
        epoch, index = self._epoch_pos
        client = {"global_step": done, "epoch": epoch, "step_in_epoch": index + 1,
                  "data_fingerprint": self.lc.data.fingerprint}
        tmp = Path(tempfile.mkdtemp(prefix="s1ray-ckpt-"))
        if self.cfg.checkpoint_optimizer_state:
            self.engine.save_checkpoint(str(tmp), tag=CKPT_TAG, client_state=client)
            wrote = True
        else:
            wrote = self._save_model(tmp)  # rank 0 only holds the gathered weights
            if wrote:
                (tmp / RESUME_FILE).write_text(json.dumps(client, indent=2))
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(tmp)) if wrote else None,
                         checkpoint_dir_name=f"checkpoint_{done:07d}")
        shutil.rmtree(tmp, ignore_errors=True)
        self.timing["time/checkpoint_s"] += time.perf_counter() - t_ckpt

    def _save_model(self, folder: Path, hook: bool = False) -> bool:
        """The consolidated weights as an HF folder under ``folder`` (collective; True on rank 0)."""
        from s1ray.models.loading import load_tokenizer
        from s1ray.train.export import consolidated_state_dict, save_hf_folder

        state = consolidated_state_dict(self.engine)  # collective under ZeRO-3
        if hook:
            for h in self.hooks:
                h.before_export(self.engine.module)
        if self.rank != 0:
            return False
        tokenizer = load_tokenizer(self.cfg.model, trust_remote_code=self.cfg.trust_remote_code)
        save_hf_folder(self.engine.module, state, tokenizer, folder / MODEL_DIR, self.dtype)
        return True

    # ---------------------------------------------------------------- finish
    def finish(self, metrics: dict[str, Any]) -> None:
        """The final checkpoint: model-only (HF folder + summary, no optimizer state), rank 0's.

        Without ``export`` (a sweep trial that keeps no model) it holds only the summary, so a
        restarted run still sees that it finished.
        """
        import ray.train
        from ray.train import Checkpoint

        final = dict(metrics, finished=True)
        tmp = Path(tempfile.mkdtemp(prefix="s1ray-final-"))
        mine = self._save_model(tmp, hook=True) if self.lc.export else self.rank == 0
        if not mine:
            shutil.rmtree(tmp, ignore_errors=True)
            ray.train.report(final)
            return
        for h in self.hooks:
            h.on_final_checkpoint(tmp)
        (tmp / SUMMARY_FILE).write_text(json.dumps(final, indent=2))
        ray.train.report(final, checkpoint=Checkpoint.from_directory(str(tmp)),
                         checkpoint_dir_name=f"final_{metrics['step']:07d}")
        shutil.rmtree(tmp, ignore_errors=True)

    def cleanup(self) -> None:
        if self.bar:
            self.bar.close()
        if self.sinks:
            self.sinks.close()
        for h in self.hooks:
            h.close()
