"""Build the Ray Train ``TorchTrainer`` for a TrainConfig, run it, and export the model.

The driver reads and tokenises the data once (small: s1K is 1,000 examples), reports
truncation and padding, and hands the row table to the workers as a Ray Dataset that
every worker receives whole (``DataConfig(datasets_to_split=[])``): the batch plan is
computed identically on every rank, which is what makes resume exact.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from s1ray.config import ConfigError
from s1ray.io.writers import write_jsonl
from s1ray.storage import check_owned
from s1ray.train.config import TrainConfig
from s1ray.train.data import build_examples, build_rows, epoch_plan, non_padding_fraction
from s1ray.train.hooks import TrainHooks

log = logging.getLogger(__name__)


def prepare_data(cfg: TrainConfig) -> tuple[Any, dict[str, Any]]:
    """Read the source, format and tokenise, truncate (counted), pack or not. -> (rows table, info)."""
    import pyarrow as pa

    from s1ray.io.readers import read_source
    from s1ray.models.loading import load_tokenizer

    read = read_source(cfg.data)
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    examples, stats = build_examples(read.records, tokenizer, cfg.delimiters, cfg.block_size)
    stats.n_quarantined += len(read.quarantined)
    stats.quarantined = read.quarantined + stats.quarantined
    if not examples:
        reasons = sorted({q.get("reason", "?") for q in stats.quarantined})[:5]
        raise ConfigError(f"no usable training examples in {cfg.data.path or cfg.data.hub_id} "
                          f"({read.n_rows} rows read; reasons: {reasons})")
    if stats.n_truncated:
        log.warning("%d of %d examples (%.1f%%) are longer than block_size=%d and were truncated",
                    stats.n_truncated, stats.n_examples, 100 * stats.truncated_fraction, cfg.block_size)
    rows = build_rows(examples, cfg.batching, cfg.block_size)
    rows = rows.append_column("row", pa.array(range(rows.num_rows), pa.int64()))
    lengths = [len(x) for x in rows.column("input_ids").to_pylist()]
    layout = cfg.batch_layout()
    plan = epoch_plan(lengths, cfg.batching, cfg.micro_batch_size, layout["gradient_accumulation"] * cfg.num_workers,
                      0, cfg.seed, cfg.group_size_multiplier, cfg.num_workers)
    digest = hashlib.sha256()
    for ids, names in zip(rows.column("input_ids").to_pylist(), rows.column("example_ids").to_pylist()):
        digest.update(json.dumps([len(ids), sum(ids), names]).encode())
    info = {
        "fingerprint": digest.hexdigest()[:16],
        "pad_id": int(tokenizer.pad_token_id),
        "vocab_size": len(tokenizer),
        "stats": {**{f"data/{k}": v for k, v in stats.as_dict().items()},
                  "data/n_rows": rows.num_rows, "data/non_pad_fraction": round(non_padding_fraction(lengths, plan), 4),
                  "data/steps_per_epoch": len(plan)},
        "quarantined": stats.quarantined[:1000],
    }
    return rows, info


def _check_storage(cfg: TrainConfig) -> None:
    """A local storage_path only works on one node (or a shared mount): fail before training starts."""
    import ray

    from s1ray.resources import cluster_can_grow

    if not cfg.storage_is_local() or cfg.storage_is_shared:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    # An autoscaling cluster that has one node now will have more once training asks for workers.
    where = f"{len(nodes)} nodes" if len(nodes) > 1 else "can add nodes (autoscaling)" if cluster_can_grow() else ""
    if where:
        raise ConfigError(
            f"storage_path={cfg.storage_path!r} is a local folder but the cluster {'has ' if len(nodes) > 1 else ''}"
            f"{where}: checkpoints written by workers on other nodes would be lost. Use s3://... or gs://..., "
            "or a shared NFS mount and set storage_is_shared: true")


def ray_storage(cfg: TrainConfig, filesystem: Any = None) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for Ray's RunConfig.

    Without ``filesystem`` Ray resolves the URI itself (``s3://`` through pyarrow's S3FileSystem,
    which reads the standard AWS variables, AWS_ENDPOINT_URL included). With one (e.g. an
    ``S3FileSystem(endpoint_override=...)`` for an S3-compatible store) Ray wants the path on that
    filesystem, i.e. the URI without its scheme.
    """
    storage = cfg.resolved_storage_path()
    if filesystem is None:
        return storage, None
    if cfg.storage_is_local():
        raise ConfigError(f"storage_path={cfg.storage_path!r}: a storage_filesystem needs a URI such as "
                          "s3://bucket/prefix (the scheme names what the filesystem serves)")
    return storage.split("://", 1)[1], filesystem


def build_trainer(cfg: TrainConfig, run_name: str | None = None, callbacks: list | None = None, *,
                  evaluation: Any = None, export: bool = True, report_also: dict[str, Any] | None = None,
                  resume_from: str | None = None, hooks: Sequence[TrainHooks] = (),
                  storage_filesystem: Any = None):
    """A ready-to-fit TorchTrainer; the same run name in the same storage resumes.

    ``evaluation`` (an :class:`s1ray.evaluate.in_training.InTrainingEval`) scores the model on
    the training workers during the run; ``export=False`` skips writing the final weights;
    ``report_also`` is added to every report; ``hooks`` instrument the loop (tests, benchmarks);
    ``storage_filesystem`` (a pyarrow filesystem) serves a remote ``storage_path`` (:func:`ray_storage`).
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from s1ray.logs import train_logging_config

    from s1ray.cluster import init_ray
    from s1ray.train.loop import DataInfo, LoopConfig, train_loop_per_worker

    if evaluation is not None:
        from s1ray.evaluate.in_training import require_full_weights

        require_full_weights(cfg.deepspeed.zero_stage)
    init_ray(cfg.ray)
    _check_storage(cfg)
    name = run_name or cfg.resolved_run_name()
    storage = cfg.resolved_storage_path()
    check_owned(f"{storage}/{name}", "Ray Train run")  # its checkpoints are unpickled on resume
    if resume_from:
        check_owned(resume_from, "resume_from checkpoint")
    run_storage, run_fs = ray_storage(cfg, storage_filesystem)
    rows, info = prepare_data(cfg)
    tb_dir = cfg.logging.tensorboard_dir
    if tb_dir is None and cfg.logging.tensorboard and cfg.storage_is_local():
        tb_dir = str(Path(storage) / name / "tensorboard")
    quarantine_file = None
    if info["quarantined"] and cfg.storage_is_local():
        quarantine_file = Path(storage) / name / "quarantine.jsonl"
        write_jsonl(info["quarantined"], quarantine_file)
        log.warning("%d training rows quarantined, see %s", len(info["quarantined"]), quarantine_file)
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})}
    loop = LoopConfig(train=cfg, run_name=name, tensorboard_dir=tb_dir,
                      quarantine_file=str(quarantine_file) if quarantine_file else None,
                      data=DataInfo(**{k: info[k] for k in ("fingerprint", "pad_id", "vocab_size", "stats")}),
                      evaluation=evaluation, export=export, report_also=dict(report_also or {}),
                      resume_from=resume_from, hooks=tuple(hooks))
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"loop": loop},
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=run_storage, storage_filesystem=run_fs, callbacks=callbacks,
                             logging_config=train_logging_config(),  # Train's INFO lines with --verbose only
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep)),
        datasets={"train": _dataset(rows)},
        dataset_config=DataConfig(datasets_to_split=[]),
    )


def _dataset(rows):
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # a 1-block table: bars are noise
    return ray.data.from_arrow(rows)


def run_train(cfg: TrainConfig, evaluation: Any = None, hooks: Sequence[TrainHooks] = (),
              force: bool = False, storage_filesystem: Any = None) -> dict[str, Any]:
    """Fit, copy the exported model to output_dir, return where it is and the final metrics.

    Refuses first (ConfigError) a run the memory plan predicts will not fit (``s1ray plan``), unless ``force``.
    """
    from s1ray.cluster import init_ray
    from s1ray.plan.check import check_train

    if cfg.use_gpu:
        init_ray(cfg.ray)  # the cluster may say which GPUs its workers have (accelerator_type)
    check_train(cfg, force)
    trainer = build_trainer(cfg, evaluation=evaluation, hooks=hooks, storage_filesystem=storage_filesystem)
    result = trainer.fit()
    if result.error:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("training finished without a final checkpoint")
    from s1ray.train.export import copy_export

    out = cfg.resolved_output_dir()
    with result.checkpoint.as_directory() as d:
        copy_export(d, out)
    loop = trainer.train_loop_config["loop"]
    return {"model_dir": out, "metrics": dict(result.metrics or {}), "run_name": loop.run_name,
            "checkpoint": result.checkpoint.path, "batch": cfg.batch_layout(),
            "data": {k.removeprefix("data/"): v for k, v in loop.data.stats.items()},
            "quarantine_file": loop.quarantine_file, "storage_path": cfg.resolved_storage_path()}
