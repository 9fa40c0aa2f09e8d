"""The memory check ``s1ray train`` (and the pipeline's train step) runs before starting workers."""

from __future__ import annotations

import logging
import os
from typing import Any

from s1ray.config import ConfigError

log = logging.getLogger(__name__)


def check_train(cfg: Any, force: bool = False) -> Any:
    """Plan ``cfg`` on its hardware; raise a ConfigError with the table and the settings that fit when the
    plan predicts an out-of-memory error, unless ``force``. Returns the plan (None when not checked).

    GPU runs are planned for the GPU type a connected Ray cluster advertises, else H100 80GB.
    CPU runs are checked against this machine's RAM only when Ray runs here (no ``ray.address``):
    a remote CPU cluster's workers have their own.
    """
    from s1ray.plan.planner import plan_train
    from s1ray.plan.report import format_plan
    from s1ray.plan.shapes import PlanError

    if not cfg.use_gpu and (cfg.ray.address or os.environ.get("RAY_ADDRESS")):
        return None
    try:
        p = plan_train(cfg)
    except PlanError as e:  # a model the planner cannot size must not block training
        log.warning("memory plan skipped: %s", e)
        return None
    if p.fits:
        log.info("memory plan: peak %.1f of %.1f GiB per device", p.peak / 2**30, p.capacity / 2**30)
        return p
    table = format_plan(p)
    if force:
        log.warning("memory plan predicts an out-of-memory error; running anyway (--force):\n%s", table)
        return p
    raise ConfigError(f"this run is predicted not to fit in memory (s1ray plan explains):\n{table}\n\n"
                      "Change the settings as shown, or pass --force to run anyway.")
