"""``s1ray plan``: per-device memory and time of a training run before it starts.

The function API (a sweep's planner builds on it)::

    from s1ray.plan import hardware, plan_train, format_plan
    p = plan_train(train_cfg, hardware("h100-80gb", devices=16))   # or plan_train(cfg): hardware_for(cfg)
    p.fits, p.peak, p.capacity              # bytes per device
    p.memory.components, p.memory.phases    # bytes by component / by phase (peak = largest phase + reserve)
    p.timing.step_s, p.timing.mfu, p.timing.wall_s, p.timing.device_hours, p.timing.steps
    p.suggestions                           # when it does not fit: Suggestion(overrides, peak_bytes, fits, note)
    p.as_dict()                             # JSON-ready (s1ray plan --json)
    print(format_plan(p))

``plan(shape, setup, hw, ...)`` plans a :class:`Setup` (the resolved settings) for a
:class:`ModelShape` directly, for callers that vary settings without a TrainConfig.
``check_train(cfg, force)`` is what ``s1ray train`` runs at job start.
"""

from s1ray.plan.check import check_train
from s1ray.plan.hardware import GPUS, Hardware, hardware
from s1ray.plan.memory import Memory, Setup, memory
from s1ray.plan.planner import Suggestion, TrainPlan, hardware_for, plan, plan_train, setup_from_config
from s1ray.plan.report import format_plan
from s1ray.plan.shapes import ModelShape, PlanError, model_shape

__all__ = ["GPUS", "Hardware", "Memory", "ModelShape", "PlanError", "Setup", "Suggestion", "TrainPlan", "check_train",
           "format_plan", "hardware", "hardware_for", "memory", "model_shape", "plan", "plan_train",
           "setup_from_config"]
