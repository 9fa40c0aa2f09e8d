"""s1-style supervised fine-tuning on Ray Train with DeepSpeed ZeRO.

``build_trainer(cfg, ...)`` and ``run_train(cfg)`` live in :mod:`s1ray.train.trainer`; the
per-worker recipe (phases set-up, step, report, checkpoint, finish) in :mod:`s1ray.train.loop`;
its instrumentation hooks in :mod:`s1ray.train.hooks`; the config in :mod:`s1ray.train.config`.
"""
