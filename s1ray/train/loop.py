"""The per-worker training loop: DeepSpeed ZeRO inside a Ray Train worker.

Every rank holds the whole (small) tokenised row table and computes the same batch plan
(:func:`s1ray.train.data.epoch_plan`), so the data position is just the global step: a
resumed run loads the DeepSpeed checkpoint (weights, optimizer, LR schedule) and continues
at the next step, skipping and repeating nothing. The loss is the token-weighted mean over
the whole global batch (``loss_reduction: token_mean``) or s1's mean of per-example means
(``example_mean``, :mod:`s1ray.train.loss`); every rank knows how many target tokens and
examples the step holds, so neither depends on how the batch is split across workers and
micro-batches.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from s1ray.train.config import TrainConfig
from s1ray.train.data import IGNORE, collate, epoch_plan, steps_per_epoch
from s1ray.train.loss import example_counts, lm_loss

CKPT_TAG = "ds"


def lr_lambda(total_steps: int, warmup_ratio: float):
    """Linear warmup over ``warmup_ratio`` of the steps, then cosine decay to 0 (HF's schedule)."""
    warmup = math.ceil(total_steps * warmup_ratio)

    def fn(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return fn


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and norm weights (1-D tensors), as HF Trainer does."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def live_tensor_bytes() -> int:
    """Bytes of every distinct tensor storage alive in this process (params, grads, optimizer state)."""
    import torch

    seen, total = set(), 0
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and not obj.is_meta:
                st = obj.untyped_storage()
                if st.data_ptr() and st.data_ptr() not in seen:
                    seen.add(st.data_ptr())
                    total += st.nbytes()
        except Exception:  # some tensor subclasses refuse storage access
            continue
    return total


def _load_model(cfg: TrainConfig, ds_config: dict, dtype: str, vocab_size: int):
    """The model; under ZeRO-3 from_pretrained loads straight into partitions (zero.Init)."""
    from s1ray.models.loading import build_tiny_model, load_model

    hf_ds_config = None
    if cfg.deepspeed.zero_stage == 3:
        # zero.Init patches torch.Tensor.__new__; torch._dynamo (imported lazily by transformers'
        # masking utils) fails to import under that patch, so import it first.
        import torch._dynamo  # noqa: F401
        import transformers.masking_utils  # noqa: F401
        from transformers import LlamaForCausalLM  # noqa: F401

        # Keeps transformers' from_pretrained in ZeRO-3 mode (zero.Init + partitioned loading).
        from transformers.integrations import HfDeepSpeedConfig

        hf_ds_config = HfDeepSpeedConfig(ds_config)
    if cfg.model.startswith("tiny:"):
        # Small by definition: built whole on every rank (same seed), partitioned by initialize.
        model = build_tiny_model(cfg.model.split(":", 1)[1], vocab_size, seed=cfg.seed)
    else:
        model = load_model(cfg.model, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
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


class MetricSinks:
    """TensorBoard by default, MLflow / W&B when configured; rank 0 only."""

    def __init__(self, cfg: TrainConfig, run_name: str, tb_dir: str | None):
        self.writers: list[Any] = []
        self.mlflow = self.wandb = None
        if cfg.logging.tensorboard and tb_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writers.append(SummaryWriter(tb_dir))
        if cfg.logging.mlflow_tracking_uri:
            try:
                import mlflow
            except ImportError as e:
                raise RuntimeError("logging.mlflow_tracking_uri is set but mlflow is not installed: "
                                   "pip install mlflow") from e
            mlflow.set_tracking_uri(cfg.logging.mlflow_tracking_uri)
            mlflow.set_experiment(cfg.logging.mlflow_experiment)
            mlflow.start_run(run_name=run_name)
            self.mlflow = mlflow
        if cfg.logging.wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise RuntimeError("logging.wandb_project is set but wandb is not installed: pip install wandb") from e
            wandb.init(project=cfg.logging.wandb_project, name=run_name, id=run_name, resume="allow")
            self.wandb = wandb

    def log(self, metrics: dict[str, float], step: int) -> None:
        for w in self.writers:
            for k, v in metrics.items():
                w.add_scalar(f"train/{k}", v, step)
        if self.mlflow:
            self.mlflow.log_metrics(metrics, step=step)
        if self.wandb:
            self.wandb.log(metrics, step=step)

    def close(self) -> None:
        for w in self.writers:
            w.close()
        if self.mlflow:
            self.mlflow.end_run()
        if self.wandb:
            self.wandb.finish()


def _maybe_fail(extra: dict, step: int, rank: int) -> None:
    """Test hook: fail once (a marker file remembers) after ``fail_at_step`` on ``fail_rank``."""
    if extra.get("fail_at_step") != step or extra.get("fail_rank", 0) != rank:
        return
    marker = Path(extra["fail_marker"])
    if marker.exists():
        return
    marker.write_text(f"failed at step {step}\n")
    if extra.get("fail_mode", "raise") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected failure at step {step} on rank {rank}")


def train_loop_per_worker(config: dict[str, Any]) -> None:
    t_entry = time.time()
    cfg = TrainConfig.model_validate(config["cfg"])
    extra: dict[str, Any] = config.get("extra") or {}
    evaluation = config.get("evaluation")  # an s1ray.evaluate.in_training.InTrainingEval, or None
    export = config.get("export", True)  # False: the final checkpoint holds metrics only (no weights)
    data_info: dict[str, Any] = config["data"]
    if not cfg.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train import Checkpoint

    from s1ray.train.deepspeed_config import build_ds_config, resolve_dtype, uses_deepspeed_optimizer
    from s1ray.train.export import consolidated_state_dict, save_hf_folder

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if not cfg.use_gpu:
        torch.set_num_threads(cfg.torch_threads or max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.use_gpu else torch.device("cpu")

    # DeepSpeed adopts the process group Ray Train already set up (gloo on CPU, nccl on GPU);
    # before this, DeepSpeedConfig would see a world size of 1.
    deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")
    rows = _read_rows()
    lengths = [len(x) for x in rows["input_ids"]]
    targets = [sum(t != IGNORE for t in lab) for lab in rows["labels"]]
    if cfg.loss_reduction == "example_mean":  # the step's normaliser counts examples, not tokens
        targets = example_counts(rows["labels"], rows["position_ids"])
    layout = cfg.batch_layout()
    accum = layout["gradient_accumulation"]
    micro_per_step = accum * world
    spe = steps_per_epoch(len(lengths), cfg.micro_batch_size, micro_per_step)
    total_steps = spe * cfg.epochs

    dtype = resolve_dtype(cfg, cfg.use_gpu)
    ds_config = build_ds_config(cfg, dtype)
    model, _hf_ds_config = _load_model(cfg, ds_config, dtype, data_info["vocab_size"])
    groups = param_groups(model, cfg.weight_decay)
    schedule = lr_lambda(total_steps, cfg.warmup_ratio)
    optimizer = None
    if not uses_deepspeed_optimizer(cfg):
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                                      weight_decay=cfg.weight_decay)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=groups if optimizer is None else None, optimizer=optimizer,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule), config=ds_config,
        dist_init_required=False)

    start_step, finished = 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and extra.get("resume_from"):
        checkpoint = Checkpoint(extra["resume_from"])
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            if (Path(d) / "train_summary.json").exists():  # the run already finished
                finished = json.loads((Path(d) / "train_summary.json").read_text())
            else:
                _, client = engine.load_checkpoint(d, tag=CKPT_TAG)
                if client.get("data_fingerprint") != data_info["fingerprint"]:
                    raise RuntimeError(f"checkpoint {checkpoint.path} was written for different training data "
                                       "(fingerprint mismatch): use a new run_name")
                start_step = int(client["global_step"])
    if finished is not None:
        ray.train.report(finished)
        return

    sinks = MetricSinks(cfg, config["run_name"], config.get("tensorboard_dir")) if rank == 0 else None
    trace = None
    if extra.get("trace_dir"):
        Path(extra["trace_dir"]).mkdir(parents=True, exist_ok=True)
        trace = open(Path(extra["trace_dir"]) / f"rank{rank}.jsonl", "a")
    bar = None
    if rank == 0 and cfg.logging.progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=start_step, desc=f"train {config['run_name']}", file=sys.stdout,
                   mininterval=5.0, dynamic_ncols=True)

    eval_steps: set[int] = set()
    tokenizer = None
    if evaluation is not None:
        if cfg.deepspeed.zero_stage == 3:
            raise ValueError("in-training evaluation needs the full weights on every rank: use "
                             "deepspeed.zero_stage <= 2 (stage 3 partitions them)")
        from s1ray.models.loading import load_tokenizer

        eval_steps = set(evaluation.steps(total_steps))
        tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    # Where a worker's time goes (reported with every result): ready = entry to the first step
    # (data, model, DeepSpeed), steps = optimizer steps, eval = in-training evaluation.
    timing = {"time/entry_unix": t_entry, "time/ready_s": time.time() - t_entry, "time/steps_s": 0.0,
              "time/eval_s": 0.0, "time/checkpoint_s": 0.0}
    pg = ray.util.get_current_placement_group()
    if pg is not None:  # lets a sweep release it if Tune stops the trial mid-run (see sweep.driver)
        timing["placement_group_id"] = pg.id.hex()
    pad_id = data_info["pad_id"]
    plans: dict[int, list] = {}
    window: dict[str, float] = {"loss": 0.0, "tokens": 0.0, "steps": 0.0}
    window_start = time.perf_counter()
    metrics: dict[str, Any] = {}
    engine.train()
    for step in range(start_step, total_steps):
        t_step = time.perf_counter()
        epoch, index = divmod(step, spe)
        if epoch not in plans:
            plans = {epoch: epoch_plan(lengths, cfg.batching, cfg.micro_batch_size, micro_per_step, epoch,
                                       cfg.seed, cfg.group_size_multiplier)}
        step_plan = plans[epoch][index]
        n_targets = sum(targets[i] for mb in step_plan for i in mb)
        lr = scheduler.get_last_lr()[0]
        local_loss, local_tokens = 0.0, 0
        mine = step_plan[rank * accum:(rank + 1) * accum]
        for k, mb in enumerate(mine):
            if mb:
                batch = collate([{c: rows[c][i] for c in ("input_ids", "labels", "position_ids")} for i in mb], pad_id)
            else:  # the epoch's last step can leave a rank without rows: a zero-weight pass keeps ranks in step
                batch = {"input_ids": torch.full((1, 1), pad_id), "labels": torch.full((1, 1), IGNORE),
                         "position_ids": torch.zeros((1, 1), dtype=torch.long)}
            batch = {k2: v.to(device) for k2, v in batch.items()}
            if cfg.loss_reduction == "token_mean":
                out = engine(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"],
                             num_items_in_batch=max(1, n_targets), use_cache=False)
                loss = out.loss if mb else out.logits.sum() * 0.0
            else:
                out = engine(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
                loss = (lm_loss(out.logits, batch["labels"], batch["position_ids"], cfg.loss_reduction, n_targets)
                        if mb else out.logits.sum() * 0.0)
            engine.backward(loss * micro_per_step)  # DeepSpeed averages over accumulation and ranks
            if extra.get("measure_memory_at_step") == step + 1 and k == len(mine) - 1:
                metrics["tensor_bytes"] = live_tensor_bytes()
            engine.step()
            local_loss += float(loss.detach())
            local_tokens += sum(lengths[i] for i in mb)
        # On the training device: NCCL reduces CUDA tensors only (gloo takes CPU ones).
        stats = torch.tensor([local_loss, float(local_tokens)], dtype=torch.float64, device=device)
        if world > 1:
            dist.all_reduce(stats)
        step_loss, step_tokens = float(stats[0]), float(stats[1])
        grad_norm = engine.get_global_grad_norm()
        done = step + 1
        timing["time/steps_s"] += time.perf_counter() - t_step
        window["loss"] += step_loss
        window["tokens"] += step_tokens
        window["steps"] += 1
        if sinks:
            sinks.log({"loss": step_loss, "lr": lr, "grad_norm": float(grad_norm or 0.0)}, done)
        if bar:
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)
        if trace:
            rec = {"step": done, "rank": rank, "loss": step_loss, "time": time.time(), "tokens": local_tokens,
                   "examples": [[rows["example_ids"][i] for i in mb] for mb in mine]}
            if extra.get("measure_memory_at_step") == done:
                rec["tensor_bytes"] = metrics["tensor_bytes"]
            trace.write(json.dumps(rec) + "\n")
            trace.flush()
        _maybe_fail(extra, done, rank)

        last = done == total_steps
        want_ckpt = done % cfg.checkpoint_every_steps == 0 and not last
        if done % cfg.metrics_every_steps == 0 or want_ckpt or last or done in eval_steps:
            elapsed = time.perf_counter() - window_start
            metrics.update({"step": done, "epoch": epoch + (index + 1) / spe, "loss": window["loss"] / window["steps"],
                            "lr": lr, "grad_norm": float(grad_norm or 0.0), "tokens_per_s": window["tokens"] / elapsed,
                            "total_steps": total_steps, **data_info["stats"]})
            if sinks:
                sinks.log({"tokens_per_s": metrics["tokens_per_s"]}, done)
            window = {"loss": 0.0, "tokens": 0.0, "steps": 0.0}
            if done in eval_steps:
                t_eval = time.perf_counter()
                metrics.update(evaluation.run(engine.module, tokenizer, done, total_steps, rank, world))
                timing["time/eval_s"] += time.perf_counter() - t_eval
            metrics.update(timing, **extra.get("report_also", {}), **{"time/report_unix": time.time()})
            if last:
                _finish(engine, cfg, config, metrics, rank, dtype, consolidated_state_dict, save_hf_folder, export)
            elif want_ckpt:
                t_ckpt = time.perf_counter()
                tmp = tempfile.mkdtemp(prefix="s1ray-ckpt-")
                engine.save_checkpoint(tmp, tag=CKPT_TAG, client_state={
                    "global_step": done, "epoch": epoch, "step_in_epoch": index + 1,
                    "data_fingerprint": data_info["fingerprint"]})
                ray.train.report(dict(metrics), checkpoint=Checkpoint.from_directory(tmp),
                                 checkpoint_dir_name=f"checkpoint_{done:07d}")
                shutil.rmtree(tmp, ignore_errors=True)
                timing["time/checkpoint_s"] += time.perf_counter() - t_ckpt
            else:
                ray.train.report(dict(metrics))
            window_start = time.perf_counter()
    if bar:
        bar.close()
    if sinks:
        sinks.close()
    if trace:
        trace.close()


def _finish(engine, cfg, config, metrics, rank, dtype, consolidated_state_dict, save_hf_folder, export) -> None:
    """Gather the weights, write the HF folder on rank 0 and report it as the final checkpoint.

    Without ``export`` (a sweep trial that keeps no model) the final checkpoint holds only the
    summary, so a restarted run still sees that it finished.
    """
    import ray.train
    from ray.train import Checkpoint

    from s1ray.models.loading import load_tokenizer

    import torch

    final = dict(metrics, finished=True)
    if not export:
        if rank != 0:
            ray.train.report(final)
            return
        tmp = tempfile.mkdtemp(prefix="s1ray-final-")
        (Path(tmp) / "train_summary.json").write_text(json.dumps(final, indent=2))
        ray.train.report(final, checkpoint=Checkpoint.from_directory(tmp), checkpoint_dir_name=f"final_{metrics['step']:07d}")
        shutil.rmtree(tmp, ignore_errors=True)
        return
    state = consolidated_state_dict(engine)  # collective under ZeRO-3
    probe = None
    if config["extra"].get("probe_input_ids"):  # logits of the trained model, to check the export against
        with torch.no_grad():
            ids = torch.tensor([config["extra"]["probe_input_ids"]], device=engine.device)
            probe = engine.module(input_ids=ids).logits.float().cpu()
    if rank != 0:
        ray.train.report(final)
        return
    tmp = tempfile.mkdtemp(prefix="s1ray-final-")
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    save_hf_folder(engine.module, state, tokenizer, Path(tmp) / "hf_model", dtype)
    if probe is not None:
        torch.save(probe, Path(tmp) / "probe_logits.pt")
    (Path(tmp) / "train_summary.json").write_text(json.dumps(final, indent=2))
    ray.train.report(final, checkpoint=Checkpoint.from_directory(tmp),
                     checkpoint_dir_name=f"final_{metrics['step']:07d}")
    shutil.rmtree(tmp, ignore_errors=True)
