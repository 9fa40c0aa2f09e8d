"""s1-style supervised fine-tuning on Ray Train with DeepSpeed ZeRO.

``build_trainer(cfg, run_name=None, callbacks=None, extra_loop_config=None)`` and
``run_train(cfg)`` live in :mod:`s1ray.train.trainer`; the config in :mod:`s1ray.train.config`.
"""
