"""init_ray's driver runtime env must merge with a submitted job's (Ray refuses duplicate keys)."""

import json

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
