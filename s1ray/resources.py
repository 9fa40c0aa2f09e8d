"""What a stage asks Ray for, and the one place that turns it into Ray Data work.

Every actor pool in s1ray (scoring models, evaluation generators) declares its
:class:`Resources` in its config: CPUs and GPUs per actor and how many actors. On a cluster
that can add nodes the declaration is requested as it is, so pending actors make the
autoscaler start the node types that hold them. Only a cluster that cannot grow (the local
Ray s1ray starts, or ``ray.autoscaling: false``) has its pools shrunk to fit what is there,
and the shrink is logged: on a 2-CPU machine a pool that takes every CPU starves Ray Data's
read and map tasks and the job hangs without a word (stack notes).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger(__name__)

# CPUs left free on a fixed cluster for Ray Data's read/map tasks (they ask for 1 CPU each).
TASK_RESERVE_CPUS = 1.0
AUTOSCALING_ENV = "S1RAY_AUTOSCALING"  # "1"/"0": overrides detection (cluster.yaml, rayjob.yaml set it)

# Recorded by s1ray.cluster.init_ray: did it start a private local Ray, and the ray.autoscaling setting.
_cluster: dict[str, Any] = {"started_locally": False, "autoscaling": None}


@dataclass(frozen=True)
class Resources:
    """One pool: ``num_cpus``/``num_gpus`` per actor and ``min_actors``..``max_actors`` actors."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    min_actors: int = 1
    max_actors: int = 1

    @classmethod
    def of(cls, cfg: Any) -> "Resources":
        """From a config with ``num_cpus``, ``num_gpus`` and ``concurrency`` (int or [min, max])."""
        lo, hi = _bounds(getattr(cfg, "concurrency", 1))
        return cls(float(getattr(cfg, "num_cpus", 1.0)), float(getattr(cfg, "num_gpus", 0.0) or 0.0), lo, hi)

    @property
    def cpus_at_most(self) -> float:
        return self.num_cpus * self.max_actors

    def compute(self) -> Any:
        """Ray Data's actor pool: fixed, or autoscaling between min and max actors."""
        import ray

        if self.min_actors == self.max_actors:
            return ray.data.ActorPoolStrategy(size=self.max_actors)
        return ray.data.ActorPoolStrategy(min_size=self.min_actors, max_size=self.max_actors)

    def ray_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            args["num_gpus"] = self.num_gpus
        return args


def _bounds(concurrency: Any) -> tuple[int, int]:
    if isinstance(concurrency, (list, tuple)):
        lo, hi = int(concurrency[0]), int(concurrency[1])
    else:
        lo = hi = int(concurrency)
    if not 1 <= lo <= hi:
        raise ValueError(f"concurrency must be a positive int or [min, max] with 1 <= min <= max, got {concurrency!r}")
    return lo, hi


def record_cluster(started_locally: bool, autoscaling: bool | None) -> None:
    _cluster.update(started_locally=started_locally, autoscaling=autoscaling)


def cluster_can_grow(setting: bool | None = None) -> bool:
    """Whether the Ray cluster can add nodes for requests it cannot place now.

    ``setting`` (default: the ``ray.autoscaling`` given to ``init_ray``) wins, then
    ``$S1RAY_AUTOSCALING``. Otherwise a private
    local Ray cannot grow, and a joined cluster can when its autoscaler publishes node types
    whose maximum holds more than the cluster has now (Ray's autoscaler v2 does; v1 publishes
    nothing, so clusters on it say so with the setting or the variable).
    """
    setting = _cluster["autoscaling"] if setting is None else setting
    if setting is not None:
        return setting
    env = os.environ.get(AUTOSCALING_ENV)
    if env is not None and env.strip() != "":
        return env.strip().lower() in ("1", "true", "yes", "on")
    if _cluster["started_locally"]:
        return False
    try:
        import ray
        from ray._private.state import state

        if not ray.is_initialized():
            return False
        most = state.get_max_resources_from_cluster_config() or {}
        now = ray.cluster_resources()
    except Exception:  # an older or newer Ray without the call: say it cannot grow (safe)
        return False
    return any(float(most.get(k, 0)) > float(now.get(k, 0)) for k in ("CPU", "GPU"))


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0)) if ray.is_initialized() else 0.0


def cluster_capacity(setting: bool | None = None) -> dict[str, float] | None:
    """What the cluster can hold: its resources now when it cannot grow; when it can, the node
    types' maximum where the autoscaler publishes it, else ``None`` (no known limit)."""
    import ray

    if not cluster_can_grow(setting):
        return {k: float(v) for k, v in ray.cluster_resources().items()}
    try:
        from ray._private.state import state

        most = state.get_max_resources_from_cluster_config()
    except Exception:
        most = None
    return {k: float(v) for k, v in most.items()} if most else None


def fit(pools: dict[str, Resources], can_grow: bool, total_cpus: float,
        reserve: float = TASK_RESERVE_CPUS) -> dict[str, Resources]:
    """``pools`` as requested when the cluster can grow; else CPUs per actor (then actor counts)
    scaled down so every pool at its maximum fits in ``total_cpus - reserve`` together.

    GPUs are never scaled: a GPU pool on a cluster without the GPUs fails in Ray with its own
    message rather than running on a fraction of nothing.
    """
    if can_grow:
        return dict(pools)
    need = sum(p.cpus_at_most for p in pools.values())
    room = total_cpus - reserve
    if need <= room:
        return dict(pools)
    scale = max(room, 0.05 * len(pools)) / need
    fitted = {}
    for name, p in pools.items():
        cpus = max(0.01, math.floor(p.num_cpus * scale * 1000) / 1000)
        fitted[name] = replace(p, num_cpus=cpus)
        log.warning("%s: %.2f -> %.3f CPUs per actor (x%d) so every pool fits on this fixed %.0f-CPU cluster "
                    "(an autoscaling cluster gets the declared resources; see ray.autoscaling)",
                    name, p.num_cpus, cpus, p.max_actors, total_cpus)
    return fitted


def fit_here(pools: dict[str, Resources], autoscaling: bool | None = None) -> dict[str, Resources]:
    """:func:`fit` against the connected cluster."""
    return fit(pools, cluster_can_grow(autoscaling), cluster_cpus())


def map_pool(ds: Any, fn: Any, resources: Resources, *, batch_size: int | None, batch_format: str,
             constructor_kwargs: dict[str, Any] | None = None) -> Any:
    """The one Ray Data adapter: ``ds`` mapped by actors of class ``fn`` with ``resources``."""
    return ds.map_batches(fn, fn_constructor_kwargs=constructor_kwargs or {}, compute=resources.compute(),
                          batch_size=batch_size, batch_format=batch_format, **resources.ray_args())
