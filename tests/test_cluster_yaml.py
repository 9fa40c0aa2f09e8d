"""cluster.yaml: accepted by Ray's own cluster-launcher validation, EC2-valid node configs, and
closed by default (no public Ray ports, token auth, no credentials)."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster.yaml"
RAY_PORTS = {6379, 8265, 10001, 8076, 52365}  # GCS, dashboard/jobs, client, object manager, agent
CREDENTIAL_PATTERNS = [
    r"AKIA[0-9A-Z]{16}",                      # AWS access key id
    r"aws_secret_access_key|aws_session_token",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"\bhf_[A-Za-z0-9]{20,}",                 # Hugging Face token
    r"\bsk-[A-Za-z0-9]{20,}",                 # OpenAI-style key
    r"(?i)\b(password|secret|api_key|token)\s*[:=]\s*[\"']?[A-Za-z0-9/+_\-]{16,}",  # literal value
]


def raw() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def launcher_view(cfg: dict) -> dict:
    """What `ray up` validates: defaults filled in and setup commands merged, then the schema."""
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def test_ray_launcher_accepts_it():
    prepared = launcher_view(raw())
    assert prepared["head_node_type"] == "head"
    assert set(prepared["available_node_types"]) == {"head", "cpu_worker", "gpu_h100"}


@pytest.mark.parametrize("mutate", [
    lambda c: c.update(worker_count=3),                                     # unknown top-level key
    lambda c: c["available_node_types"]["gpu_h100"].update(min_worker=0),   # misspelt node key
    lambda c: c["docker"].update(imagee="x"),                               # misspelt docker key
    lambda c: c["provider"]["security_group"].update(Rules=[]),             # unknown SG key
])
def test_launcher_validation_rejects_unknown_keys(mutate):
    """The check above has teeth: the same validator refuses a config with a stray key."""
    cfg = raw()
    mutate(cfg)
    with pytest.raises(jsonschema.ValidationError):
        launcher_view(cfg)


def test_node_configs_are_valid_run_instances_parameters():
    """node_config goes to EC2 RunInstances as is (SubnetIds aside): check it against the EC2 API model."""
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    for name, node_type in raw()["available_node_types"].items():
        params = {k: v for k, v in node_type["node_config"].items() if k != "SubnetIds"}
        report = ParamValidator().validate({**params, "MinCount": 1, "MaxCount": 1}, shape)
        assert not report.has_errors(), f"{name}: {report.generate_report()}"


def test_node_groups_match_the_plan():
    cfg = raw()
    nodes = cfg["available_node_types"]
    head, cpu, gpu = nodes["head"], nodes["cpu_worker"], nodes["gpu_h100"]
    # Head: drivers only, on-demand, and `ray start` advertises the same 0 CPUs.
    assert head["resources"] == {"CPU": 0}
    assert "InstanceMarketOptions" not in head["node_config"]
    assert "--num-cpus=0" in " ".join(cfg["head_start_ray_commands"])
    assert cpu["resources"].get("GPU", 0) == 0 and cpu["resources"]["CPU"] > 0
    assert gpu["resources"]["GPU"] == 8 and gpu["node_config"]["InstanceType"] == "p5.48xlarge"
    assert gpu["min_workers"] == 0 and cpu["min_workers"] == 0
    assert sum(n.get("max_workers", 0) for n in nodes.values()) <= cfg["max_workers"]


def test_image_matches_installed_ray_and_python():
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert raw()["docker"]["image"] == f"rayproject/ray:{ray.__version__}-{py}-gpu"


def test_setup_installs_s1ray_from_the_synced_working_copy():
    cfg = raw()
    mounts = cfg["file_mounts"]
    for remote, local in mounts.items():
        if local.startswith("./"):
            assert (REPO / local).exists(), f"file_mounts {remote}: {local} is not in the repository"
            assert remote.startswith("~/s1ray-src/")
    assert {"./s1ray", "./pyproject.toml"} <= set(mounts.values())
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    commands = cfg["setup_commands"] + cfg["available_node_types"]["gpu_h100"]["worker_setup_commands"]
    installs = [re.search(r'pip install .*-e "\$HOME/s1ray-src\[([a-z,]+)\]"', c) for c in commands]
    used = {e for m in installs if m for e in m.group(1).split(",")}
    assert "cluster" in used and "gpu" in used
    assert used <= set(extras), f"unknown extras {used - set(extras)}"


def test_ray_ports_are_not_public():
    cfg = raw()
    text = yaml.safe_dump(cfg)  # values only: the comments may explain what is NOT done
    # The launcher opens only SSH by itself; any extra rule must not open a Ray port to the world.
    for rule in cfg["provider"].get("security_group", {}).get("IpPermissions", []):
        ports = set(range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1))
        world = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", [])) or any(
            r.get("CidrIpv6") == "::/0" for r in rule.get("Ipv6Ranges", []))
        assert not (world and ports & RAY_PORTS), rule
    assert cfg["provider"]["security_group"]["GroupName"]
    assert "0.0.0.0" not in text and "::/0" not in text
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "ray-client-server-port" not in head_start or "127.0.0.1" in head_start


def test_token_auth_is_on_everywhere():
    cfg = raw()
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert "RAY_AUTH_MODE=token" in cmd, cmd
    # The token is a file copied from the user's machine, never a value in this file.
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_no_credentials_and_hardened_nodes():
    text = CLUSTER.read_text()
    for pattern in CREDENTIAL_PATTERNS:
        hits = [m.group(0) for m in re.finditer(pattern, text)]
        assert not hits, f"credential-like text in cluster.yaml: {hits}"
    for name, node_type in raw()["available_node_types"].items():
        nc = node_type["node_config"]
        assert nc["MetadataOptions"]["HttpTokens"] == "required", f"{name}: IMDSv2 not enforced"
        assert all(b["Ebs"]["Encrypted"] for b in nc["BlockDeviceMappings"]), f"{name}: unencrypted disk"


def test_credential_scan_catches_a_planted_key(tmp_path):
    """The scan above would see a key pasted into the file."""
    for line in ["# aws_secret_access_key: abc", "  key: AKIAABCDEFGHIJKLMNOP",
                 "  password: 'hunter2hunter2hunter2'", "  HF_TOKEN: hf_abcdefghijklmnopqrstuvwx"]:
        planted = CLUSTER.read_text() + "\n" + line + "\n"
        assert any(re.search(p, planted) for p in CREDENTIAL_PATTERNS), line


def all_commands(cfg: dict) -> list[str]:
    keys = ["initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands"]
    cmds = [c for k in keys for c in cfg.get(k, [])]
    return cmds + [c for n in cfg["available_node_types"].values() for c in n.get("worker_setup_commands", [])]


def test_every_command_is_valid_shell():
    for cmd in all_commands(raw()):
        check = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert check.returncode == 0, f"{cmd!r}: {check.stderr}"


def test_shared_storage_is_mounted_on_every_host_and_container():
    cfg = raw()
    mount = " ".join(cfg["initialization_commands"])  # host level, before the container starts
    assert "mount -t nfs4" in mount and f".efs.{cfg['provider']['region']}.amazonaws.com:/" in mount
    assert "/mnt/s1ray" in mount
    assert "-v /mnt/s1ray:/mnt/s1ray" in cfg["docker"]["run_options"]
    assert "-e S1RAY_STORAGE=/mnt/s1ray" in cfg["docker"]["run_options"]


def test_start_commands_export_node_secrets_to_ray(tmp_path):
    """The start commands source ~/.s1ray/secrets/*.env (synced from the user's machine) so Ray's
    processes, and every task they start, see HF_TOKEN & co. without any config naming a value."""
    cfg = raw()
    assert cfg["file_mounts"]["~/.s1ray/secrets"] == "~/.s1ray/secrets"
    secrets = tmp_path / ".s1ray" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "hf.env").write_text("HF_TOKEN=hf_test_value\n")
    (secrets / "notes.txt").write_text("NOT_LOADED=1\n")
    for cmd in (cfg["head_start_ray_commands"][-1], cfg["worker_start_ray_commands"][-1]):
        prefix = cmd[:cmd.index("ulimit")]  # everything before `ray start`
        probe = prefix + f' {sys.executable} -c \'import os; print(os.environ.get("HF_TOKEN"), os.environ.get("NOT_LOADED"))\''
        out = subprocess.run(["bash", "-c", probe], env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True)
        assert out.stdout.split() == ["hf_test_value", "None"], out.stderr
    empty = tmp_path / "empty"
    (empty / ".s1ray" / "secrets").mkdir(parents=True)
    out = subprocess.run(["bash", "-c", prefix + " echo ok"], env={"HOME": str(empty), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ok" and out.stderr == ""
