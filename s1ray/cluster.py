"""Connect to the Ray cluster at ``RAY_ADDRESS`` (or a configured address), else start a local one."""

from __future__ import annotations

import json
import logging
import os

from s1ray.config import RayConfig


def init_ray(cfg: RayConfig | None = None) -> None:
    """Idempotent ``ray.init``: join a cluster when one is named, else start a private local one.

    ``address="local"`` is explicit so a stray ``ray start`` on the machine is never joined by
    accident. Set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before Ray is imported to keep a
    local instance on loopback (the tests do).
    """
    import ray

    if ray.is_initialized():
        return
    cfg = cfg or RayConfig()
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    runtime_env = _driver_runtime_env()
    from s1ray.resources import record_cluster

    record_cluster(started_locally=not address, autoscaling=cfg.autoscaling)
    from s1ray.logs import after_ray_init, ray_init_kwargs  # quiet unless --verbose (s1ray/logs.py)

    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, **ray_init_kwargs())
        logging.getLogger(__name__).info("joined the Ray cluster at %s", address)
    else:
        ray.init(
            address="local",
            num_cpus=cfg.num_cpus,
            include_dashboard=cfg.include_dashboard,
            runtime_env=runtime_env,
            **ray_init_kwargs(),
        )
        logging.getLogger(__name__).info("started a private local Ray instance (%d CPUs)",
                                         int(ray.cluster_resources().get("CPU", 0)))
    after_ray_init()


def _driver_runtime_env() -> dict:
    """s1ray's worker defaults, minus keys a submitted job's runtime env already sets.

    Inside ``ray job submit`` the job's runtime env is injected into ``ray.init``, and Ray
    refuses to merge an env var set on both sides (jobs/runtime_env.yaml sets this one too).
    """
    env_vars = {"TOKENIZERS_PARALLELISM": "false"}
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    taken = ((job.get("runtime_env") or {}).get("env_vars")) or {}
    env_vars = {k: v for k, v in env_vars.items() if k not in taken}
    return {"env_vars": env_vars} if env_vars else {}
