"""jobs/kuberay/rayjob.yaml: a RayJob that KubeRay's CRD accepts field by field, equivalent to
cluster.yaml, that the operator can manage (NetworkPolicy admits it to the dashboard port), that
nobody else can drive (token auth, ClusterIP only), whose bounded retries resume through s1ray's
fixed output folder, and that runs a real s1ray job with a valid config.

No Kubernetes API here. The RayJob is checked against KubeRay's own CRD schema (openAPIV3Schema
of ray-operator/config/crd/bases/ray.io_rayjobs.yaml, descriptions stripped, gzipped in
tests/data/kuberay/) of the release the README names as the minimum, v1.5.1 (commit
9e8a2c085b7b7c96cf7cc5d857787bc2d78406c6), and of the release before it, v1.5.0 (commit
21cf8ccdc0f617931ab424b884248a8c637b4136), which must NOT accept it: so the stated minimum is the
real one. The API server prunes unknown fields silently; here they are errors.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml

from s1ray import cli
from s1ray.config import is_secret_key, load_config
from s1ray.resources import AUTOSCALING_ENV
from test_cluster_yaml import CREDENTIAL_PATTERNS

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "jobs" / "kuberay" / "rayjob.yaml"
DOCKERFILE = REPO / "jobs" / "kuberay" / "Dockerfile"
CRD_DIR = Path(__file__).parent / "data" / "kuberay"
IMAGE_ROOT = "/home/ray/s1ray/"  # where the Dockerfile puts the repository
MIN_KUBERAY = "1.5.1"
PREVIOUS_KUBERAY = "1.5.0"
MIN_RAY_FOR_TOKEN_AUTH = (2, 52, 0)  # KubeRay's validation refuses authOptions.mode=token below it
DASHBOARD_PORT = 8265
sys.path.insert(0, str(REPO / "jobs" / "kuberay"))  # check_image.py, the image's build-time check


def docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def of_kind(kind: str) -> list[dict]:
    return [d for d in docs() if d["kind"] == kind]


def rayjob() -> dict:
    (job,) = of_kind("RayJob")
    return job


def groups() -> dict[str, dict]:
    spec = rayjob()["spec"]["rayClusterSpec"]
    return {"head": spec["headGroupSpec"], **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def crd_schema(version: str) -> dict:
    return json.loads(gzip.decompress((CRD_DIR / f"ray.io_rayjobs-v{version}.schema.json.gz").read_bytes()))


# --- a structural-schema check, as strict as the API server's validation plus pruning ----------

def schema_errors(value, schema: dict, path: str = "") -> list[str]:
    """What the CRD's openAPIV3Schema refuses (wrong types, enums, patterns, missing required
    fields) or would silently prune (unknown fields) in ``value``."""
    where = path or "<root>"
    if "anyOf" in schema or schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return [f"{where}: expected an integer or a string, got {value!r}"]
        if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
            return [f"{where}: {value!r} does not match {schema['pattern']}"]
        return []
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        errors = [f"{where}: missing required field {r!r}" for r in schema.get("required", []) if r not in value]
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            if props is not None and key in props:
                errors += schema_errors(item, props[key], sub)
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, sub)
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{sub}: unknown field (not in the CRD)")
        return errors
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {type(value).__name__}"]
        return [e for i, item in enumerate(value) for e in schema_errors(item, schema.get("items", {}), f"{path}.{i}")]
    checks = {"string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}
    if kind in checks and not checks[kind](value):
        return [f"{where}: expected {kind}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    if kind == "string" and "pattern" in schema and not re.search(schema["pattern"], value):
        return [f"{where}: {value!r} does not match {schema['pattern']}"]
    if kind == "integer" and "minimum" in schema and value < schema["minimum"]:
        return [f"{where}: {value} is below {schema['minimum']}"]
    return []


def test_rayjob_is_accepted_by_the_minimum_kuberay_crd():
    errors = schema_errors(rayjob(), crd_schema(MIN_KUBERAY))
    assert not errors, "\n".join(errors)


def test_the_release_before_the_minimum_does_not_know_every_field():
    """KubeRay 1.5.0 would prune authOptions silently, i.e. run without token auth."""
    errors = schema_errors(rayjob(), crd_schema(PREVIOUS_KUBERAY))
    assert errors == ["spec.rayClusterSpec.authOptions: unknown field (not in the CRD)"], errors


@pytest.mark.parametrize("mutate, expected", [
    (lambda j: j["spec"].update(backofLimit=2), "spec.backofLimit: unknown field"),
    (lambda j: j["spec"]["rayClusterSpec"]["authOptions"].update(mode="tokens"), "not one of"),
    (lambda j: j["spec"].update(backoffLimit="2"), "spec.backoffLimit: expected integer"),
    (lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
     .update(securityContex={}), "containers.0.securityContex: unknown field"),
    (lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]
     ["resources"]["limits"].update(memory="lots"), "does not match"),
    (lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"].pop("template"), "missing required field 'template'"),
])
def test_schema_check_has_teeth(mutate, expected):
    job = rayjob()
    mutate(job)
    errors = schema_errors(job, crd_schema(MIN_KUBERAY))
    assert any(expected in e for e in errors), errors


def test_supported_versions_are_stated_truthfully():
    spec = rayjob()["spec"]
    assert tuple(int(x) for x in spec["rayClusterSpec"]["rayVersion"].split(".")) >= MIN_RAY_FOR_TOKEN_AUTH
    for path in (MANIFEST, REPO / "README.md"):
        text = path.read_text()
        assert f"KubeRay ≥ {MIN_KUBERAY}" in text or f"KubeRay >= {MIN_KUBERAY}" in text, path.name
        assert "KubeRay ≥ 1.1" not in text and "KubeRay >= 1.1" not in text, path.name


def test_token_auth_is_on():
    assert rayjob()["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}


def test_groups_match_cluster_yaml():
    """Same plan as cluster.yaml: drivers-only head, CPU scoring workers, 8-GPU workers from 0."""
    cluster_yaml = yaml.safe_load((REPO / "cluster.yaml").read_text())["available_node_types"]
    g = groups()
    assert set(g) == {"head", "cpu-workers", "gpu-workers"}
    assert g["head"]["rayStartParams"]["num-cpus"] == "0" == str(cluster_yaml["head"]["resources"]["CPU"])
    assert g["gpu-workers"]["minReplicas"] == cluster_yaml["gpu_h100"]["min_workers"] == 0
    assert g["gpu-workers"]["maxReplicas"] == cluster_yaml["gpu_h100"]["max_workers"]
    assert g["cpu-workers"]["maxReplicas"] == cluster_yaml["cpu_worker"]["max_workers"]
    assert rayjob()["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is True
    for name, grp in g.items():
        if name != "head":
            assert 0 <= grp["minReplicas"] <= grp["replicas"] <= grp["maxReplicas"], name


def test_every_container_has_requests_and_limits():
    for name, g in groups().items():
        for c in containers(g):
            res = c["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res[kind]), f"{name}/{c['name']}: {kind}"
            gpus = res["limits"].get("nvidia.com/gpu")
            assert res["requests"].get("nvidia.com/gpu") == gpus  # extended resources: equal or absent
            efa = res["limits"].get("vpc.amazonaws.com/efa")
            assert res["requests"].get("vpc.amazonaws.com/efa") == efa
            if name == "gpu-workers":
                assert gpus == "8"
                assert efa == "32"  # every EFA interface of a p5.48xlarge: NCCL over EFA, not TCP
                assert any(t["key"] == "nvidia.com/gpu" for t in g["template"]["spec"].get("tolerations", []))
            else:
                assert gpus is None and efa is None, f"{name} must not hold GPUs or EFA devices"


def test_images_are_the_pinned_cluster_image():
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    spec = rayjob()["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == ray.__version__
    images = {c["image"] for g in groups().values() for c in containers(g)}
    assert len(images) == 1
    (image,) = images
    tag = f"s1ray:0.1.0-ray{ray.__version__}-{py}-gpu"
    assert image == tag, image  # the README's sed puts the registry in front
    cluster_image = yaml.safe_load((REPO / "cluster.yaml").read_text())["docker"]["image"]
    assert cluster_image.endswith("/" + tag), "cluster.yaml and KubeRay must run the same image"
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert base == f"rayproject/ray:{ray.__version__}-{py}-gpu@${{RAY_BASE_DIGEST}}", base
    assert tag in text  # the build command in the Dockerfile makes this tag
    assert re.search(r"^WORKDIR /home/ray/s1ray$", text, re.M)
    for line in re.findall(r"^COPY (?:--\S+ )*(.+)$", text, re.M):
        for src in line.split()[:-1]:
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"


def entrypoint_command() -> list[str]:
    """The s1ray command inside the entrypoint's `bash -o pipefail -c '... | tee ...'`."""
    outer = shlex.split(rayjob()["spec"]["entrypoint"])
    assert outer[:3] == ["bash", "-o", "pipefail"] and outer[3] == "-c", outer
    inner = outer[4]
    command = inner.split("&&", 1)[1].split("|", 1)[0]
    return shlex.split(command)


def test_entrypoint_runs_a_real_job_with_a_valid_config_in_shared_storage(monkeypatch):
    argv = entrypoint_command()
    assert argv[0] == "python" and argv[1].startswith(IMAGE_ROOT)
    script = REPO / argv[1].removeprefix(IMAGE_ROOT)
    assert script.is_file(), f"{script} is not in the repository"
    command = re.search(r'main\(\["(\w+)"', script.read_text()).group(1)
    assert command in cli.COMMANDS
    config = REPO / argv[argv.index("--config") + 1].removeprefix(IMAGE_ROOT)
    assert config.is_file(), f"{config} is not in the repository"
    assert config.read_text().splitlines()[0].startswith(f"# s1ray {command} --config ")
    overrides = [a for a in argv[argv.index("--config") + 2:] if "=" in a and not a.startswith("2>")]
    # The same validation the job does first, with the pods' environment: every key known, every
    # type right, and the output in the shared storage at a fixed place, so a retry resumes there.
    monkeypatch.setenv("S1RAY_STORAGE", "/mnt/s1ray")
    cls = cli._import(cli.COMMANDS[command][0])
    first = load_config(cls, config, overrides)
    assert str(first.output_dir).startswith("/mnt/s1ray/runs/")
    assert load_config(cls, config, overrides).output_dir == first.output_dir  # no timestamp: the same run
    monkeypatch.setenv("S1RAY_STORAGE", "/elsewhere")
    assert str(load_config(cls, config, overrides).output_dir).startswith("/elsewhere/runs/")


def test_entrypoint_keeps_the_log_in_storage_and_the_exit_status(tmp_path):
    """Run the entrypoint's shell with a stand-in `python`: its output lands in
    $S1RAY_STORAGE/logs, and its failure is the job's failure (so backoffLimit retries it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text("#!/bin/sh\necho \"driver says $1\"\necho 'worker trace' >&2\nexit ${FAKE_RC:-0}\n")
    fake.chmod(0o755)
    storage = tmp_path / "storage"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "S1RAY_STORAGE": str(storage)}
    # KubeRay's submitter puts the entrypoint after `ray job submit ... --` in a shell command
    # (its shell splits it), and the Ray CLI sends shlex.join(argv) to the job server, whose
    # supervisor runs that string with a shell on the head: reproduce that chain.
    entrypoint = shlex.join(shlex.split(rayjob()["spec"]["entrypoint"]))
    ok = subprocess.run(["sh", "-c", entrypoint], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (log,) = (storage / "logs").iterdir()
    assert log.read_text().splitlines() == ["driver says /home/ray/s1ray/jobs/curate.py", "worker trace"]
    assert "driver says" in ok.stdout  # still on the job's stdout for `ray job logs`
    failed = subprocess.run(["sh", "-c", entrypoint], env={**env, "FAKE_RC": "3"}, capture_output=True, text=True)
    assert failed.returncode == 3
    assert len(log.read_text().splitlines()) == 4  # appended: a retry's log follows the first attempt's


def test_bounded_retries_that_resume():
    spec = rayjob()["spec"]
    assert 1 <= spec["backoffLimit"] <= 3  # retried, but a broken job does not loop forever
    assert spec["activeDeadlineSeconds"] > 0 and spec["shutdownAfterJobFinishes"] is True
    assert "jobId" not in spec  # KubeRay names each attempt; s1ray resumes by output folder


def test_runtime_env_matches_jobs_runtime_env():
    inline = yaml.safe_load(rayjob()["spec"]["runtimeEnvYAML"])
    example = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    assert inline["env_vars"] == example["env_vars"]
    assert "working_dir" not in inline and "pip" not in inline  # the code and its pins are in the image


def test_storage_and_secrets_come_from_refs_only():
    for name, g in groups().items():
        pod = g["template"]["spec"]
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
        for c in containers(g):
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert claims[mounts["/mnt/s1ray"]] == "s1ray-shared", name
            env = {e["name"]: e for e in c["env"]}
            assert env["S1RAY_STORAGE"]["value"] == "/mnt/s1ray"
            # Worker groups start at 0 replicas: stages must request their declared resources.
            assert env[AUTOSCALING_ENV]["value"] == "1"
            for var, entry in env.items():
                if is_secret_key(var):
                    assert "value" not in entry and entry["valueFrom"]["secretKeyRef"]["name"], var
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
        # Jobs run as uid 1000, the owner of the shared storage (not root, not world-writable storage).
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000


def test_least_privilege_service_accounts():
    accounts = {sa["metadata"]["name"]: sa for sa in of_kind("ServiceAccount")}
    g = groups()
    assert g["head"]["template"]["spec"]["serviceAccountName"] == "s1ray-head"
    for name in ("cpu-workers", "gpu-workers"):
        pod = g[name]["template"]["spec"]
        assert pod["serviceAccountName"] == "s1ray-worker" and pod["automountServiceAccountToken"] is False
    assert set(accounts) == {"s1ray-head", "s1ray-worker", "s1ray-submitter"}
    assert accounts["s1ray-worker"]["automountServiceAccountToken"] is False
    for name in ("s1ray-head", "s1ray-worker"):
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+",
                            accounts[name]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"])
    # The submitter needs the Ray token only: no cloud role, no Kubernetes API token.
    submitter = accounts["s1ray-submitter"]
    assert "annotations" not in submitter["metadata"] and submitter["automountServiceAccountToken"] is False


def submitter_pod() -> dict:
    return rayjob()["spec"]["submitterPodTemplate"]


def test_the_driver_runs_without_the_autoscalers_token():
    """The job's driver runs in the head's ray-head container (the job server's supervisor), the
    submitter in its own pod. Neither may act with the autoscaler's Kubernetes rights: the head
    pod mounts no token, and its projected token goes to the autoscaler container only
    (KubeRay adds autoscalerOptions.volumeMounts to the container it injects)."""
    spec = rayjob()["spec"]
    head = groups()["head"]["template"]["spec"]
    assert head["serviceAccountName"] == "s1ray-head" and head["automountServiceAccountToken"] is False
    (token_volume,) = [v for v in head["volumes"] if "projected" in v]
    sources = token_volume["projected"]["sources"]
    assert {"path": "token", "expirationSeconds": 3600} in [s.get("serviceAccountToken") for s in sources]
    mounts = spec["rayClusterSpec"]["autoscalerOptions"]["volumeMounts"]
    assert mounts == [{"name": token_volume["name"], "readOnly": True,
                       "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    from ray.autoscaler._private.kuberay.node_provider import IN_CLUSTER_CA_CERT_PATH, IN_CLUSTER_TOKEN_PATH

    paths = {f"{mounts[0]['mountPath']}/{s[k].get('path') or s[k]['items'][0]['path']}"
             for s in sources for k in s}
    assert {IN_CLUSTER_TOKEN_PATH, IN_CLUSTER_CA_CERT_PATH} <= paths  # where Ray's autoscaler reads them
    for name, g in groups().items():
        for c in containers(g):
            assert token_volume["name"] not in {m["name"] for m in c["volumeMounts"]}, f"{name}/{c['name']}"
    sub = submitter_pod()["spec"]
    assert sub["serviceAccountName"] == "s1ray-submitter" and sub["automountServiceAccountToken"] is False
    assert sub["restartPolicy"] == "Never" and spec["submissionMode"] == "K8sJobMode"
    (container,) = sub["containers"]
    assert "command" not in container  # KubeRay fills in `ray job submit` (address, job id, token)
    assert container["image"] == containers(groups()["head"])[0]["image"]


def all_pods() -> dict[str, dict]:
    return {**{name: g["template"] for name, g in groups().items()}, "submitter": submitter_pod()}


def test_every_pod_is_confined():
    """Non-root, RuntimeDefault seccomp (the container runtime's syscall filter), no privilege
    escalation, no capabilities: for every Ray pod, the submitter and the autoscaler container."""
    for name, pod in all_pods().items():
        sc = pod["spec"]["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000, name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in pod["spec"]["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, name
        assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "s1ray", name  # NetworkPolicy applies
    auto = rayjob()["spec"]["rayClusterSpec"]["autoscalerOptions"]["securityContext"]
    assert auto == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    errors = schema_errors(rayjob(), crd_schema(MIN_KUBERAY))  # seccompProfile etc. are CRD fields
    assert not errors, errors


def test_checkpoints_are_staged_on_the_nodes_local_disk():
    """TMPDIR (checkpoint staging, Ray's temp dir) is an emptyDir on every pod; the GPU pods ask for
    enough ephemeral storage that only an instance-store-backed p5 node can hold them."""
    for name, g in groups().items():
        pod = g["template"]["spec"]
        local = {v["name"] for v in pod["volumes"] if v.get("emptyDir") == {}}
        for c in containers(g):
            env = {e["name"]: e.get("value") for e in c["env"]}
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts[env["TMPDIR"]] in local, name
    gpu = containers(groups()["gpu-workers"])[0]["resources"]
    assert gpu["requests"]["ephemeral-storage"] == gpu["limits"]["ephemeral-storage"] == "2Ti"


def test_network_policy_admits_the_namespace_and_the_operator_to_the_dashboard_only():
    head = rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and head["enableIngress"] is False
    text = yaml.safe_dump_all(docs())  # values only: the comments may name what is NOT used
    for word in ("LoadBalancer", "NodePort", "hostNetwork: true", "hostPath"):
        assert word not in text
    policy = of_kind("NetworkPolicy")[0]
    assert "ipBlock" not in yaml.safe_dump(policy["spec"]["ingress"])  # ingress by pod identity only
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    selected = policy["spec"]["podSelector"]["matchLabels"]
    for name, g in groups().items():
        labels = g["template"]["metadata"]["labels"]
        assert selected.items() <= labels.items(), f"{name} pods are not covered by the NetworkPolicy"
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    same_namespace, operator = policy["spec"]["ingress"]
    assert same_namespace == {"from": [{"podSelector": {}}]}
    (peer,) = operator["from"]
    # One peer with BOTH selectors = the operator's pods in the operator's namespace (two peers
    # would admit every pod of that namespace, or operator-labelled pods of any namespace).
    assert set(peer) == {"namespaceSelector", "podSelector"}
    assert set(peer["namespaceSelector"]["matchLabels"]) == {"kubernetes.io/metadata.name"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}
    dashboard = {p["containerPort"] for p in containers(head)[0]["ports"] if p["name"] == "dashboard"}
    assert operator["ports"] == [{"protocol": "TCP", "port": DASHBOARD_PORT}] and dashboard == {DASHBOARD_PORT}


# --- egress, evaluated: NetworkPolicy semantics for IP destinations and same-namespace pods ------

METADATA, API_SERVICE, API_ENDPOINT = "169.254.169.254", "10.100.0.1", "10.0.12.34"  # EKS defaults
PUBLIC_HTTPS = "52.92.16.1"  # an S3 address


def egress_allowed(pod_labels: dict, ip: str | None, port: int, protocol: str = "TCP",
                   to_pod: dict | None = None) -> bool:
    """Whether the manifest's NetworkPolicies let a pod with ``pod_labels`` reach ``ip:port`` (or a
    pod of the same namespace with labels ``to_pod``): allowed by any rule of any policy that
    selects the pod for Egress; a pod no policy selects for Egress is not isolated."""
    import ipaddress

    selecting = [p["spec"] for p in of_kind("NetworkPolicy")
                 if p["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
                 and "Egress" in p["spec"]["policyTypes"]]
    if not selecting:
        return True
    for spec in selecting:
        for rule in spec.get("egress", []):
            ports = rule.get("ports")
            if ports and not any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports):
                continue
            for peer in rule.get("to", [{}]):
                if "ipBlock" in peer and ip is not None:
                    block = peer["ipBlock"]
                    addr = ipaddress.ip_address(ip)
                    if addr in ipaddress.ip_network(block["cidr"]) and not any(
                            addr in ipaddress.ip_network(e) for e in block.get("except", [])):
                        return True
                if set(peer) == {"podSelector"} and to_pod is not None:
                    if peer["podSelector"].get("matchLabels", {}).items() <= to_pod.items():
                        return True
    return False


def test_egress_reaches_what_the_jobs_need_and_not_the_metadata_service_or_the_api():
    labels = {name: {**pod["metadata"]["labels"], **({"ray.io/node-type": "head"} if name == "head" else {})}
              for name, pod in all_pods().items()}  # KubeRay adds ray.io/node-type to the Ray pods
    for name, mine in labels.items():
        assert egress_allowed(mine, PUBLIC_HTTPS, 443), name               # hub, S3, STS
        assert egress_allowed(mine, None, 6379, to_pod=labels["head"]), name  # Ray inside the namespace
        assert not egress_allowed(mine, METADATA, 80), name                # instance credentials
        assert not egress_allowed(mine, METADATA, 443), name
        assert not egress_allowed(mine, PUBLIC_HTTPS, 22), name            # HTTPS only to the outside
        api = egress_allowed(mine, API_SERVICE, 443) or egress_allowed(mine, API_ENDPOINT, 443)
        assert api == (name == "head"), name                               # the autoscaler's pod only
    (dns,) = [r for p in of_kind("NetworkPolicy") for r in p["spec"].get("egress", [])
              if any(port["port"] == 53 for port in r.get("ports", []))]
    (peer,) = dns["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_no_credentials_in_manifest_or_dockerfile():
    for path in (MANIFEST, DOCKERFILE):
        text = path.read_text()
        for pattern in CREDENTIAL_PATTERNS:
            assert not re.search(pattern, text), f"{path.name}: credential-like text ({pattern})"


def test_crd_snapshots_are_the_named_releases():
    """The stored schemas are KubeRay's: the minimum has authOptions (mode enum) and backoffLimit."""
    new, old = crd_schema(MIN_KUBERAY), crd_schema(PREVIOUS_KUBERAY)
    spec = new["properties"]["spec"]["properties"]
    auth = spec["rayClusterSpec"]["properties"]["authOptions"]["properties"]["mode"]
    assert auth["enum"] == ["disabled", "token"] and spec["backoffLimit"]["type"] == "integer"
    assert "authOptions" not in old["properties"]["spec"]["properties"]["rayClusterSpec"]["properties"]
    assert os.path.getsize(CRD_DIR / f"ray.io_rayjobs-v{MIN_KUBERAY}.schema.json.gz") < 50_000


# --- the image's GPU build: DeepSpeed ops pre-built with torch's CUDA, the EFA stack, NCCL settings ---

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines, out, current = DOCKERFILE.read_text().splitlines(), [], ""
    for line in lines:
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            keyword, _, args = current.partition(" ")
            out.append((keyword.upper(), args.strip()))
            current = ""
    return out


def dockerfile_args() -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in dockerfile_instructions() if k == "ARG" and "=" in a)


def dockerfile_env() -> dict[str, str]:
    env = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def constraint_pin(name: str) -> str:
    (pin,) = re.findall(rf"^{re.escape(name)}==(\S+)$", (REPO / "jobs" / "kuberay" / "constraints.txt").read_text(), re.M)
    return pin


def test_image_prebuilds_deepspeed_adam_for_cuda_with_torchs_cuda_release():
    """fused_adam / cpu_adam compiled at build time for DeepSpeed's CUDA accelerator (DeepSpeed loads a
    pre-built op only when its recorded accelerator is the one it runs on: a build without GPU would
    record 'cpu'), with the nvcc of the CUDA release torch's wheels need (cuda-toolkit pin)."""
    runs = [a for k, a in dockerfile_instructions() if k == "RUN"]
    (install,) = [r for r in runs if "-c jobs/kuberay/constraints.txt" in r and '-e ".[cluster,gpu]"' in r]
    steps = [s.strip() for s in install.split("&&")]
    assert steps[0].startswith("pip install") and '-e ".[cluster,gpu]"' in steps[0]
    rebuild = next(s for s in steps if "deepspeed" in s.split() and "--no-build-isolation" in s)
    for setting in ("DS_ACCELERATOR=cuda", "DS_BUILD_FUSED_ADAM=1", "DS_BUILD_CPU_ADAM=1", "TORCH_CUDA_ARCH_LIST="):
        assert setting in rebuild, setting
    assert "9.0" in rebuild.split("TORCH_CUDA_ARCH_LIST=")[1].split()[0]  # H100
    assert "--no-deps" in rebuild and "-c jobs/kuberay/constraints.txt" in rebuild  # the pinned DeepSpeed again
    assert steps.index(rebuild) < steps.index("python jobs/kuberay/check_image.py") < len(steps) - 1
    major, minor = constraint_pin("cuda-toolkit").split(".")[:2]
    args = dockerfile_args()
    assert args["CUDA_APT_VERSION"] == f"{major}-{minor}"
    assert args["CUDA_HOME_DIR"] == f"/usr/local/cuda-{major}.{minor}"
    apt = next(r for r in runs if "apt-get install" in r)
    assert "cuda-nvcc-${CUDA_APT_VERSION}" in apt and "${CUDA_HOME_DIR}/bin/nvcc --version" in apt
    assert dockerfile_env()["CUDA_HOME"] == "${CUDA_HOME_DIR}"
    # the toolkit is installed before the pip step that compiles with it
    assert runs.index(apt) < runs.index(install)


def test_image_has_efa_and_nccl_uses_it():
    runs = [a for k, a in dockerfile_instructions() if k == "RUN"]
    efa = next(r for r in runs if "efa_installer.sh" in r)
    assert "efa-installer.amazonaws.com/aws-efa-installer-${EFA_INSTALLER_VERSION}.tar.gz" in efa
    assert re.fullmatch(r"\d+\.\d+\.\d+", dockerfile_args()["EFA_INSTALLER_VERSION"])
    for flag in ("-y", "--skip-kmod", "--no-verify"):  # user space only; no EFA device during the build
        assert flag in efa.split()
    env = dockerfile_env()
    assert env["FI_PROVIDER"] == "efa" and env["FI_EFA_USE_DEVICE_RDMA"] == "1" and env["FI_EFA_FORK_SAFE"] == "1"
    assert env["NCCL_SOCKET_IFNAME"].startswith("^lo")
    lib_path = env["LD_LIBRARY_PATH"].split(":")
    from check_image import EFA_LIBS

    for pattern in EFA_LIBS:  # what the build-time check looks for is on the loader's path
        folder = pattern.split("/lib")[0]
        assert any(p.startswith(folder + "/lib") for p in lib_path), (pattern, lib_path)


def test_every_run_step_is_valid_shell():
    args = dockerfile_args()
    for keyword, cmd in dockerfile_instructions():
        if keyword == "RUN":
            for name, value in args.items():
                cmd = cmd.replace("${" + name + "}", value)
            check = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
            assert check.returncode == 0, f"{cmd!r}: {check.stderr}"


def test_check_image_names_each_problem():
    from check_image import PREBUILT_OPS, image_problems

    efa = {"/opt/amazon/efa/lib*/libfabric.so*": ["/opt/amazon/efa/lib/libfabric.so.1"],
           "/opt/amazon/ofi-nccl/lib*/**/libnccl-net*.so*": ["/opt/amazon/ofi-nccl/lib/libnccl-net-ofi.so"]}
    good = dict(installed_ops={op: True for op in PREBUILT_OPS}, accelerator_name="cuda", built_with_cuda="13.0",
                torch_cuda="13.0", efa_files=efa)
    assert image_problems(**good) == []
    bad = {
        "fused_adam": dict(installed_ops={"cpu_adam": True, "fused_adam": False}),
        "accelerator 'cpu'": dict(accelerator_name="cpu"),
        "built with CUDA 12.8": dict(built_with_cuda="12.8"),
        "CPU build": dict(torch_cuda=None),
        "aws-ofi-nccl": dict(efa_files={**efa, "/opt/amazon/ofi-nccl/lib*/**/libnccl-net*.so*": []}),
    }
    for expected, change in bad.items():
        problems = image_problems(**{**good, **change})
        assert len(problems) >= 1 and any(expected in p for p in problems), (expected, problems)


def test_check_image_refuses_this_machines_cpu_install():
    """The real check, run here: this CPU install has no pre-built CUDA ops and no EFA (exit status 1)."""
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "kuberay" / "check_image.py")], capture_output=True,
                         text=True, env={**os.environ, "DS_ACCELERATOR": "cpu"})
    assert out.returncode == 1, out.stdout
    assert "not pre-built: fused_adam, cpu_adam" in out.stderr and "'cpu', not 'cuda'" in out.stderr
    assert "EFA: nothing matches" in out.stderr

def test_image_base_is_pinned_by_digest_and_runs_as_uid_1000():
    """The base image is named by digest (a tag can be re-pointed), given at build time with no
    default, so a build that forgets it fails instead of pulling whatever the tag names today; the
    image states its user numerically, the uid the pods require (runAsNonRoot, runAsUser)."""
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)(?:=(\S*))?$", text, re.M))
    assert args.get("RAY_BASE_DIGEST", "missing") == "", "RAY_BASE_DIGEST must be a build arg without default"
    assert text.index("ARG RAY_BASE_DIGEST") < text.index("\nFROM ")
    assert len(re.findall(r"^FROM ", text, re.M)) == 1
    assert re.search(r"--build-arg RAY_BASE_DIGEST=sha256:", text)  # the documented build command
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] == "1000:100", users  # the last USER is the one the image runs as
    for name, pod in all_pods().items():
        sc = pod["spec"]["securityContext"]
        assert f"{sc['runAsUser']}:{sc['runAsGroup']}" == users[-1], name
