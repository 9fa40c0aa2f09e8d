"""Connect to the Ray cluster at ``RAY_ADDRESS`` (or a configured address), else start a local one.

A local Ray listens on 127.0.0.1 only unless ``ray.listen: network``: by default Ray binds its
servers to every interface and advertises the machine's address, and anyone who can reach those
ports and read the token can run code as this user. Ray's token file is kept private (0600).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Iterator

from s1ray.config import RayConfig

log = logging.getLogger(__name__)

# Ray reads this once, when ``ray._private.ray_constants`` is imported; "0" makes every server of
# a local instance bind 127.0.0.1 and advertise it (the mode Ray uses on macOS and Windows).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_ray(cfg: RayConfig | None = None) -> None:
    """Idempotent ``ray.init``: join a cluster when one is named, else start a private local one.

    ``address="local"`` is explicit so a stray ``ray start`` on the machine is never joined by
    accident. A local instance listens on loopback unless ``cfg.listen == "network"``.
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
        private_token_file()
        with listening(cfg.listen):
            ray.init(
                address="local",
                num_cpus=cfg.num_cpus,
                include_dashboard=cfg.include_dashboard,
                runtime_env=runtime_env,
                **ray_init_kwargs(),
            )
        logging.getLogger(__name__).info("started a private local Ray instance (%d CPUs, listening on %s)",
                                         int(ray.cluster_resources().get("CPU", 0)),
                                         ray.util.get_node_ip_address())
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


@contextlib.contextmanager
def listening(listen: str) -> Iterator[None]:
    """While a local Ray starts: ``loopback`` keeps every server on 127.0.0.1; ``network`` leaves
    Ray's default (the machine's address, all interfaces).

    The environment variable reaches the processes Ray starts; this process read it when it
    imported Ray, so its copy of the setting is switched too, and both are restored afterwards.
    """
    if listen == "network":
        yield
        return
    from ray._private import ray_constants

    old_env, old_flag = os.environ.get(LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = old_env


def token_path() -> Path:
    """Where Ray reads its authentication token (``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def private_token_file() -> Path | None:
    """Ray's token for a new local instance, readable by this user only.

    Ray 2.60 writes a missing token with the default umask (0644 here: every local user could
    read it and connect). So it is created here first, mode 0600, in Ray's own format (64 hex
    characters), and an existing one this user owns is narrowed to 0600. Nothing to do when the
    token comes from ``RAY_AUTH_TOKEN`` or authentication is off (``RAY_AUTH_MODE=disabled``).
    """
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return None
    path = token_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        st = path.stat()
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            path.chmod(0o600)
            log.info("narrowed Ray's token file %s to mode 0600 (was %04o)", path, st.st_mode & 0o777)
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path
