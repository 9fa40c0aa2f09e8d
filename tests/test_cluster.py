"""init_ray: the driver runtime env merges with a submitted job's (Ray refuses duplicate keys); a local
instance listens on loopback unless told otherwise, and Ray's token file is private."""

import json
import os

from s1ray.cluster import _driver_runtime_env


def test_defaults_outside_a_job(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert _driver_runtime_env() == {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}


def test_keys_the_job_already_sets_are_left_to_the_job(monkeypatch):
    job = {"runtime_env": {"working_dir": "gcs://x.zip", "env_vars": {"TOKENIZERS_PARALLELISM": "true"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert _driver_runtime_env() == {}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": {"A": "1"}}}))
    assert _driver_runtime_env() == {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}


# --- a local Ray listens on loopback; its token file is private ---------------------------------

LISTEN_PROBE = """
import json, os, sys
import psutil, ray
from s1ray.cluster import init_ray
from s1ray.config import RayConfig

init_ray(RayConfig(num_cpus=1, include_dashboard=True))  # the dashboard too, as a sweep starts it
ray.get(ray.remote(lambda: 1).options(num_cpus=0.1).remote())  # a worker process exists
session = ray._private.worker._global_node.get_session_dir_path()
procs = {p.pid: p for p in psutil.Process().children(recursive=True)}
procs[os.getpid()] = psutil.Process()
for p in psutil.process_iter(["cmdline"]):  # anything of this session that left the process tree
    if any(session in part for part in (p.info["cmdline"] or [])):
        procs[p.pid] = p
listening = set()
for p in procs.values():
    try:
        listening |= {(c.laddr.ip, p.name()) for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
print("LISTENING " + json.dumps(sorted(listening)))
ray.shutdown()
"""


def test_local_ray_listens_on_loopback_only_and_its_token_is_private(tmp_path, ray_tmp):
    """A real local instance started by init_ray in a fresh process, without the tests' own
    loopback setting: no socket on a non-loopback address; Ray's token file is 0600."""
    import ipaddress
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE",
                                                             "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")}
    env.update(HOME=str(tmp_path), RAY_TMPDIR=str(ray_tmp))
    out = subprocess.run([sys.executable, "-c", LISTEN_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    listening = json.loads(out.stdout.split("LISTENING ", 1)[1].splitlines()[0])
    names = {name for _, name in listening}
    assert {"gcs_server", "raylet"} <= names, listening  # the probe saw Ray's servers
    exposed = [(ip, name) for ip, name in listening
               if not ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback]
    assert exposed == []
    token = tmp_path / ".ray" / "auth_token"
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text()) == 64


def test_token_file_is_created_private_and_narrowed(tmp_path, monkeypatch):
    from s1ray.cluster import private_token_file

    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "ray" / "token"))
    path = private_token_file()
    assert path == tmp_path / "ray" / "token" and path.stat().st_mode & 0o777 == 0o600
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    path.chmod(0o644)  # as Ray itself writes it
    assert private_token_file() == path and path.stat().st_mode & 0o777 == 0o600 and path.read_text() == token
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert private_token_file() is None


def test_listen_switch(monkeypatch):
    """loopback: Ray's setting switched while a local instance starts (this process and its
    children), then restored; network: Ray's defaults untouched. Bad values fail in the config."""
    import pytest
    from ray._private import ray_constants

    from s1ray.cluster import LOOPBACK_ENV, listening
    from s1ray.config import ConfigError, RayConfig, load_config

    monkeypatch.delenv(LOOPBACK_ENV, raising=False)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    with listening("loopback"):
        assert os.environ[LOOPBACK_ENV] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
    assert LOOPBACK_ENV not in os.environ and ray_constants.ENABLE_RAY_CLUSTER is True
    with listening("network"):
        assert LOOPBACK_ENV not in os.environ and ray_constants.ENABLE_RAY_CLUSTER is True
    assert RayConfig().listen == "loopback"
    with pytest.raises(ConfigError, match="listen"):
        load_config(RayConfig, None, ["listen=everywhere"])
