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
    lambda c: c["provider"].update(security_group={"GroupName": "x", "Rules": []}),  # unknown SG key
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


GPU_AMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
CONSTRAINTS = REPO / "jobs" / "kuberay" / "constraints.txt"


def test_every_node_boots_one_pinned_ami():
    """No ImageId = the launcher's default "Deep Learning AMI (Ubuntu 18.04) V71.0" (CUDA 11, no
    H100 driver); resolve:ssm:.../latest = whatever AMI is newest at each launch, so two nodes of
    one run may differ and an AMI update lands unreviewed. Every node type names the same AMI id
    (the head role may launch only that one, jobs/aws/s1ray-head-policy.json); the comment says
    which SSM parameter gives the Deep Learning Base OSS Nvidia Driver GPU AMI's current id."""
    ids = {node_type["node_config"]["ImageId"] for node_type in raw()["available_node_types"].values()}
    (ami,) = ids
    assert re.fullmatch(r"ami-[0-9a-f]{8}([0-9a-f]{9})?", ami), ami
    assert GPU_AMI_PARAMETER in CLUSTER.read_text()  # how to look the id up


def test_gpu_containers_get_the_gpus():
    cfg = raw()
    gpu = cfg["available_node_types"]["gpu_h100"]
    assert gpu["resources"]["GPU"] == 8
    assert "--gpus all" in gpu["docker"]["worker_run_options"]
    assert not cfg["docker"].get("disable_automatic_runtime_detection", False)  # Ray may add --runtime=nvidia too
    # --gpus fails on a host without the NVIDIA runtime: CPU nodes must not get it.
    for where in (cfg["docker"].get("run_options", []), cfg["docker"].get("worker_run_options", []),
                  cfg["docker"].get("head_run_options", [])):
        assert not any("--gpus" in o for o in where)
    for name in ("head", "cpu_worker"):
        assert "--gpus" not in str(cfg["available_node_types"][name].get("docker", {}))


def test_launcher_merges_the_gpu_run_options_into_gpu_nodes_only():
    """What Ray's autoscaler does per node type (node-specific docker config over the global one)."""
    prepared = launcher_view(raw())
    for name, node_type in prepared["available_node_types"].items():
        docker = {**prepared["docker"], **node_type.get("docker", {})}
        options = docker.get("run_options", []) + docker.get("worker_run_options", [])
        assert ("--gpus all" in options) == (name == "gpu_h100"), name


def test_one_pinned_image_and_no_installs_at_boot():
    cfg = raw()
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    image = cfg["docker"]["image"]
    registry, _, repo_tag = image.partition("/")
    assert repo_tag == f"s1ray:0.1.0-ray{ray.__version__}-{py}-gpu", image
    assert re.fullmatch(r"\d{12}\.dkr\.ecr\." + cfg["provider"]["region"] + r"\.amazonaws\.com", registry)
    assert repo_tag in (REPO / "jobs" / "kuberay" / "Dockerfile").read_text()  # built from the Dockerfile
    assert not {"head_image", "worker_image"} & set(cfg["docker"])
    assert all("worker_image" not in n.get("docker", {}) for n in cfg["available_node_types"].values())
    # The nodes log in to that registry with their instance profile before pulling.
    login = [c for c in cfg["initialization_commands"] if "docker login" in c]
    assert len(login) == 1 and registry in login[0] and "aws ecr get-login-password" in login[0]
    for cmd in all_commands(cfg):
        assert not re.search(r"\bpip3? install\b|\buv pip\b|conda install", cmd), f"install at boot: {cmd}"
    assert cfg["setup_commands"] == []
    # No source tree synced for an install: only the token and the secrets folder.
    assert set(cfg["file_mounts"]) == {"~/.ray/auth_token", "~/.s1ray/secrets"}


def test_constraints_pin_every_direct_dependency_at_a_version_it_allows():
    """jobs/kuberay/constraints.txt: one exact version per direct dependency of s1ray[cluster,gpu],
    allowed by pyproject.toml, Ray = the client's Ray, vLLM = what ray[llm] requires, and the
    versions of the CPU lock (requirements/cpu.lock, what CI runs the suite with) wherever both pin
    a package: pins compared with pins, never with what the package index serves that day."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    from test_lock import read_pins  # tests/ is on sys.path (pytest rootdir conftest)

    pins = read_pins(CONSTRAINTS)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["gpu"]
              + project["optional-dependencies"]["cluster"]]
    for req in direct:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (a direct dependency) is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req}: pin {pins[name]} not allowed"
    assert pins["ray"] == Version(ray.__version__)
    llm = [Requirement(r) for r in metadata.requires("ray") or [] if 'extra == "llm"' in r]
    (vllm,) = [r for r in llm if canonicalize_name(r.name) == "vllm"]
    assert vllm.specifier.contains(pins["vllm"]), f"ray[llm] wants {vllm}, constraints pin {pins['vllm']}"
    lock = read_pins(REPO / "requirements" / "cpu.lock")
    for name, pin in pins.items():
        if name in ("vllm", "torch") or name not in lock:
            continue  # CUDA builds on the cluster, CPU builds in the lock; GPU-only packages
        assert lock[name].base_version == pin.base_version, f"{name}: lock pins {lock[name]}, image pins {pin}"
    assert lock["torch"].base_version == pins["torch"].base_version
    dockerfile = (REPO / "jobs" / "kuberay" / "Dockerfile").read_text()
    assert re.search(r'pip install .*-c jobs/kuberay/constraints\.txt .*-e "\.\[cluster,gpu\]"', dockerfile)


def test_ray_ports_are_not_public():
    cfg = raw()
    text = yaml.safe_dump(cfg)  # values only: the comments may explain what is NOT done
    # The launcher opens only SSH by itself; any extra rule must not open a Ray port to the world.
    for rule in cfg["provider"].get("security_group", {}).get("IpPermissions", []):
        ports = set(range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1))
        world = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", [])) or any(
            r.get("CidrIpv6") == "::/0" for r in rule.get("Ipv6Ranges", []))
        assert not (world and ports & RAY_PORTS), rule
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
        # Hop limit 1: the metadata token cannot be fetched through one more network hop (a container
        # on a bridge network); Ray's containers use the host network, so they still get their role.
        assert nc["MetadataOptions"]["HttpPutResponseHopLimit"] == 1, f"{name}: metadata reachable one hop away"
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


def test_containers_use_the_host_network():
    """Why hop limit 1 still lets containers reach their instance role: Ray starts them with --net=host."""
    from ray.autoscaler._private.docker import docker_start_cmds

    cfg = raw()
    cmd = docker_start_cmds("ubuntu", cfg["docker"]["image"], {}, cfg["docker"]["container_name"],
                            cfg["docker"]["run_options"], cfg["cluster_name"], "/home/ray", "docker")
    assert "--net=host" in cmd and "--network" not in " ".join(raw()["docker"]["run_options"])


def test_every_node_type_names_the_security_group_by_id(monkeypatch):
    """A name the launcher cannot find makes it create a group with SSH open to 0.0.0.0/0; ids it
    passes to RunInstances as they are, and a missing one fails the launch. Ray's own set-up step
    (run here) must find a group id in every node type and never try to create one. EFA node types
    (NetworkInterfaces) carry the id in each interface's Groups, which Ray copies first."""
    from ray.autoscaler._private.aws import config as aws_config

    def would_create(config, node_types):
        raise AssertionError(f"the launcher would create a security group for {node_types}")

    monkeypatch.setattr(aws_config, "_upsert_security_groups", would_create)
    cfg = launcher_view(raw())
    assert "security_group" not in cfg["provider"]
    configured = aws_config._configure_security_group(aws_config._configure_from_network_interfaces(cfg))
    groups = {g for n in configured["available_node_types"].values() for g in n["node_config"]["SecurityGroupIds"]}
    (group,) = groups
    assert re.fullmatch(r"sg-[0-9a-f]{8}([0-9a-f]{9})?", group)
    without = raw()
    del without["available_node_types"]["cpu_worker"]["node_config"]["SecurityGroupIds"]
    with pytest.raises(AssertionError, match="would create a security group for \\['cpu_worker'\\]"):
        aws_config._configure_security_group(aws_config._configure_from_network_interfaces(launcher_view(without)))


def test_shared_storage_is_mounted_on_every_host_and_container():
    cfg = raw()
    mount = " ".join(cfg["initialization_commands"])  # host level, before the container starts
    # The EFS mount helper, encrypted in transit (tls), authorised by the instance role (iam),
    # through the access point that acts as uid 1000; never a plain NFS mount as a fallback.
    assert re.search(r"sudo mount -t efs -o tls,iam,accesspoint=\$EFS_AP \"\$EFS_ID:/\" /mnt/s1ray", mount)
    assert "nfs4" not in mount and "nfs-common" not in mount
    assert re.search(r"EFS_ID=fs-[0-9a-f]{17} && EFS_AP=fsap-[0-9a-f]{17}", mount)
    assert "-v /mnt/s1ray:/mnt/s1ray" in cfg["docker"]["run_options"]
    assert "-e S1RAY_STORAGE=/mnt/s1ray" in cfg["docker"]["run_options"]
    # Closed to others: checkpoints there are unpickled on resume.
    assert "chmod 1777" not in mount and "chmod 777" not in mount and "a+w" not in mount
    assert "sudo chmod 0750 /mnt/s1ray" in mount
    assert "mkdir -p -m 0750 /mnt/s1ray/runs /mnt/s1ray/logs" in mount


def test_checkpoints_are_staged_on_the_local_nvme(tmp_path):
    """TMPDIR in every container is the host's instance store (the DLAMI mounts a p5's NVMe at
    /opt/dlami/nvme): tempfile.mkdtemp (s1ray's checkpoint folders), Checkpoint.as_directory and
    Ray's own temp dir (session, object spilling) all follow it, instead of the root volume."""
    options = raw()["docker"]["run_options"]
    assert "-v /opt/dlami/nvme/s1ray-tmp:/mnt/nvme/tmp" in options and "-e TMPDIR=/mnt/nvme/tmp" in options
    nvme = tmp_path / "nvme-tmp"  # stands in for /mnt/nvme/tmp (gettempdir needs it to exist)
    nvme.mkdir()
    probe = ("import tempfile; from ray._common.utils import get_default_ray_temp_dir as ray_tmp; "
             "from ray.train import Checkpoint; c = Checkpoint('/nonexistent'); "
             "print(tempfile.mkdtemp(prefix='s1ray-ckpt-'), ray_tmp(), c._get_temporary_checkpoint_dir())")
    env = {"TMPDIR": str(nvme), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    staged = out.stdout.split()
    assert len(staged) == 3 and all(p.startswith(str(nvme) + "/") for p in staged), (staged, out.stderr[-2000:])


def test_initialization_commands_run_and_leave_storage_closed(tmp_path):
    """Run the host-side commands with stand-ins for sudo's privileged calls, mount and the AWS /
    Docker CLIs, with /mnt/s1ray moved under tmp_path: the EFS address is built from the id, the
    folder ends up mode 0750 with runs/ and logs/, the registry login pipes the token to `docker login`."""
    cfg = raw()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    root = tmp_path / "root"
    stubs = {
        "sudo": f'case "$1" in chown|mount|apt-get) echo "sudo $*" >> {log}; exit 0;; esac\nexec "$@"',
        "mountpoint": "exit 1",
        "mount.efs": "exit 0",
        "aws": f'echo "aws $*" >> {log}; echo token-from-aws',
        "docker": f'echo "docker $* stdin=$(cat)" >> {log}',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    for cmd in cfg["initialization_commands"]:
        out = subprocess.run(["bash", "-c", moved_under(cmd, root)], env=env, capture_output=True, text=True)
        assert out.returncode == 0, (cmd, out.stderr)
    calls = log.read_text()
    storage = root / "mnt" / "s1ray"
    assert f"sudo mount -t efs -o tls,iam,accesspoint=fsap-0123456789abcdef0 fs-0123456789abcdef0:/ {storage}" in calls
    assert "chown" not in calls.split("sudo mount", 1)[0]  # the access point, not a chown, sets the owner
    staging = root / "opt" / "dlami" / "nvme" / "s1ray-tmp"
    assert f"sudo chown 1000:100 {staging}" in calls and oct(staging.stat().st_mode & 0o777) == "0o700"
    assert oct(storage.stat().st_mode & 0o777) == "0o750"
    assert {p.name for p in storage.iterdir()} == {"runs", "logs"}
    assert all(oct(p.stat().st_mode & 0o777) == "0o750" for p in storage.iterdir())
    assert "aws ecr get-login-password --region us-west-2" in calls
    assert re.search(r"docker login --username AWS --password-stdin \d{12}\.dkr\.ecr\.us-west-2\.amazonaws\.com "
                     r"stdin=token-from-aws", calls)


def moved_under(cmd: str, root: Path) -> str:
    """A host command with the paths it touches (the EFS mount, the NVMe, the device list) under root."""
    moved = cmd
    for path in ("/mnt/s1ray", "/opt/dlami/nvme", "/dev/disk/by-id"):
        moved = moved.replace(path, f"{root}{path}")
        assert path not in moved.replace(f"{root}{path}", ""), path  # nothing touches the real path
    return moved


def test_hosts_refuse_to_stage_on_the_root_volume_or_mount_without_tls(tmp_path):
    """A host with instance-store NVMe that is not mounted where TMPDIR points, or without the EFS
    mount helper, stops its boot (Ray reports the failed node) rather than degrade silently."""
    mount_efs, staging = raw()["initialization_commands"][:2]
    root = tmp_path / "root"
    (root / "dev" / "disk" / "by-id").mkdir(parents=True)
    (root / "dev" / "disk" / "by-id" / "nvme-Amazon_EC2_NVMe_Instance_Storage_AWS1").touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"mountpoint": "exit 1", "sudo": 'exec "$@"'}.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    out = subprocess.run(["bash", "-c", moved_under(staging, root)], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "staging would go to the root volume" in out.stderr
    assert not (root / "opt" / "dlami" / "nvme" / "s1ray-tmp").exists()
    (bin_dir / "mountpoint").write_text("#!/bin/bash\nexit 0\n")  # the AMI mounted the instance store
    out = subprocess.run(["bash", "-c", moved_under(staging, root)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(["bash", "-c", moved_under(mount_efs, root)], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "mount.efs missing" in out.stderr  # no helper on PATH here
    assert not (root / "mnt" / "s1ray").exists()


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


def test_jobs_know_the_cluster_can_grow():
    """Worker groups start at 0 nodes: the head's Ray (whose environment jobs inherit) says the
    cluster autoscales, so stages request their declared resources instead of fitting to 0 CPUs."""
    from s1ray.resources import AUTOSCALING_ENV

    head = " ".join(raw()["head_start_ray_commands"])
    assert f"{AUTOSCALING_ENV}=1 " in head and "ray start --head" in head.split(f"{AUTOSCALING_ENV}=1 ", 1)[1]


P5_NETWORK_CARDS = 32  # p5.48xlarge: 32 network cards, 3,200 Gbps of EFA in all


def test_gpu_nodes_use_every_efa_card_in_one_subnet_and_a_cluster_placement_group():
    """Without EFA interfaces NCCL between p5 nodes runs over TCP (docs/paper-scale.md "Network")."""
    gpu = raw()["available_node_types"]["gpu_h100"]
    nc = gpu["node_config"]
    nics = nc["NetworkInterfaces"]
    assert sorted(n["NetworkCardIndex"] for n in nics) == list(range(P5_NETWORK_CARDS))  # one per card
    for n in nics:
        primary = n["NetworkCardIndex"] == 0
        assert n["DeviceIndex"] == (0 if primary else 1), n  # AWS's P5 layout
        assert n["InterfaceType"] == "efa" if primary else n["InterfaceType"] in ("efa", "efa-only"), n
        assert n["DeleteOnTermination"] is True
    assert len({n["SubnetId"] for n in nics}) == 1, "one subnet = one availability zone for every card"
    assert len({tuple(n["Groups"]) for n in nics}) == 1 and all(g.startswith("sg-") for g in nics[0]["Groups"])
    assert nc["Placement"]["GroupName"]  # a cluster placement group (created before `ray up`)
    assert not {"SubnetId", "SubnetIds", "SecurityGroupIds"} & set(nc)  # the launcher refuses both levels
    options = gpu["docker"]["worker_run_options"]
    assert "--device=/dev/infiniband" in options and "--ulimit memlock=-1:-1" in options
    for name in ("head", "cpu_worker"):  # CPU nodes: no EFA, so no devices to pass
        assert "/dev/infiniband" not in str(raw()["available_node_types"][name])


def test_the_aws_launcher_takes_subnet_and_groups_from_the_interfaces():
    """Ray's own AWS bootstrap step for NetworkInterfaces: one subnet for the node type, the group ids."""
    from ray.autoscaler._private.aws.config import _configure_subnets_and_groups_from_network_interfaces

    nc = raw()["available_node_types"]["gpu_h100"]["node_config"]
    done = _configure_subnets_and_groups_from_network_interfaces(nc)
    assert set(done["SubnetIds"]) == {nc["NetworkInterfaces"][0]["SubnetId"]}
    assert set(done["SecurityGroupIds"]) == set(nc["NetworkInterfaces"][0]["Groups"])
    broken = copy.deepcopy(nc)
    del broken["NetworkInterfaces"][5]["SubnetId"]
    with pytest.raises(ValueError, match="missing a subnet"):
        _configure_subnets_and_groups_from_network_interfaces(broken)


def test_node_config_check_has_teeth_for_network_interfaces():
    """The EC2-model check above sees a misspelt interface key or a wrongly typed card index."""
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    nc = raw()["available_node_types"]["gpu_h100"]["node_config"]
    for mutate in (lambda n: n.update(NetworkCardIdx=1), lambda n: n.update(NetworkCardIndex="one")):
        bad = copy.deepcopy(nc)
        mutate(bad["NetworkInterfaces"][3])
        assert ParamValidator().validate({**bad, "MinCount": 1, "MaxCount": 1}, shape).has_errors()
