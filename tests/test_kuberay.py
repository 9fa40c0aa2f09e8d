"""jobs/kuberay/rayjob.yaml: a RayJob the KubeRay CRD (ray.io/v1) accepts, equivalent to
cluster.yaml, whose entrypoint runs a real s1ray job with a valid config, and closed by default.

No Kubernetes API here: field names and required fields follow the RayJob / RayCluster CRD
(ray-operator/config/crd/bases/ray.io_rayjobs.yaml); types are checked as the CRD declares them.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import ray
import yaml

from s1ray import cli
from s1ray.config import is_secret_key, load_config
from test_cluster_yaml import CREDENTIAL_PATTERNS

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "jobs" / "kuberay" / "rayjob.yaml"
DOCKERFILE = REPO / "jobs" / "kuberay" / "Dockerfile"
IMAGE_ROOT = "/home/ray/s1ray/"  # where the Dockerfile puts the repository

# Fields of the ray.io/v1 CRD (KubeRay 1.1+); anything else is rejected or silently pruned.
RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionStrategy", "entrypoint",
               "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "jobId", "managedBy",
               "metadata", "rayClusterSpec", "runtimeEnvYAML", "shutdownAfterJobFinishes", "submissionMode",
               "submitterConfig", "submitterPodTemplate", "suspend", "ttlSecondsAfterFinished"}
CLUSTER_SPEC = {"autoscalerOptions", "enableInTreeAutoscaling", "gcsFaultToleranceOptions", "headGroupSpec",
                "headServiceAnnotations", "managedBy", "rayVersion", "suspend", "workerGroupSpecs"}
HEAD_SPEC = {"enableIngress", "headService", "rayStartParams", "serviceType", "template"}
WORKER_SPEC = {"groupName", "idleTimeoutSeconds", "maxReplicas", "minReplicas", "numOfHosts", "rayStartParams",
               "replicas", "scaleStrategy", "suspend", "template"}
AUTOSCALER_OPTIONS = {"env", "envFrom", "idleTimeoutSeconds", "image", "imagePullPolicy", "resources",
                      "securityContext", "upscalingMode", "volumeMounts", "version"}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
QUANTITY = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
                      r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")  # the CRD's quantity pattern
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def rayjob() -> dict:
    (job,) = [d for d in docs() if d["kind"] == "RayJob"]
    return job


def groups() -> dict[str, dict]:
    spec = rayjob()["spec"]["rayClusterSpec"]
    return {"head": spec["headGroupSpec"], **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def test_rayjob_shape_follows_the_crd():
    job = rayjob()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert DNS1123.match(job["metadata"]["name"])
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC, set(spec) - RAYJOB_SPEC
    assert isinstance(spec["entrypoint"], str) and spec["entrypoint"].strip()
    assert spec["shutdownAfterJobFinishes"] is True and isinstance(spec["ttlSecondsAfterFinished"], int)
    assert spec["submissionMode"] in SUBMISSION_MODES
    cluster = spec["rayClusterSpec"]
    assert set(cluster) <= CLUSTER_SPEC, set(cluster) - CLUSTER_SPEC
    assert set(cluster["autoscalerOptions"]) <= AUTOSCALER_OPTIONS
    head = cluster["headGroupSpec"]
    assert set(head) <= HEAD_SPEC, set(head) - HEAD_SPEC
    assert containers(head)
    for g in cluster["workerGroupSpecs"]:
        assert set(g) <= WORKER_SPEC, set(g) - WORKER_SPEC
        for field in ("groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"):
            assert field in g, f"{g.get('groupName')}: missing {field}"
        assert DNS1123.match(g["groupName"])
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert containers(g)
    for name, g in groups().items():
        # rayStartParams is map[string]string in the CRD: a bare number or bool is refused.
        assert all(isinstance(v, str) for v in g["rayStartParams"].values()), name


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


def test_every_container_has_requests_and_limits():
    for name, g in groups().items():
        for c in containers(g):
            res = c["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res[kind]), f"{name}/{c['name']}: {kind}"
                for key, qty in res[kind].items():
                    assert QUANTITY.match(str(qty)), f"{name}: {key}={qty!r} is not a quantity"
            gpus = res["limits"].get("nvidia.com/gpu")
            assert res["requests"].get("nvidia.com/gpu") == gpus  # extended resources: equal or absent
            if name == "gpu-workers":
                assert gpus == "8"
                assert any(t["key"] == "nvidia.com/gpu" for t in g["template"]["spec"].get("tolerations", []))
            else:
                assert gpus is None, f"{name} must not hold GPUs"


def test_images_match_installed_ray_and_the_dockerfile():
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    spec = rayjob()["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == ray.__version__
    images = {c["image"] for g in groups().values() for c in containers(g)}
    assert len(images) == 1
    (image,) = images
    assert image.endswith(f":0.1.0-ray{ray.__version__}-{py}-gpu"), image
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert base == f"rayproject/ray:{ray.__version__}-{py}-gpu"
    assert base == yaml.safe_load((REPO / "cluster.yaml").read_text())["docker"]["image"]
    assert image.split("/")[-1] in text  # the build command in the Dockerfile makes this tag
    assert re.search(r"^WORKDIR /home/ray/s1ray$", text, re.M)
    for line in re.findall(r"^COPY (?:--\S+ )*(.+)$", text, re.M):
        for src in line.split()[:-1]:
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"


def test_entrypoint_runs_a_real_job_with_a_valid_config():
    argv = shlex.split(rayjob()["spec"]["entrypoint"])
    assert argv[0] == "python" and argv[1].startswith(IMAGE_ROOT)
    script = REPO / argv[1].removeprefix(IMAGE_ROOT)
    assert script.is_file(), f"{script} is not in the repository"
    command = re.search(r'main\(\["(\w+)"', script.read_text()).group(1)
    assert command in cli.COMMANDS
    config = REPO / argv[argv.index("--config") + 1].removeprefix(IMAGE_ROOT)
    assert config.is_file(), f"{config} is not in the repository"
    assert config.read_text().splitlines()[0].startswith(f"# s1ray {command} --config ")
    overrides = [a for a in argv[argv.index("--config") + 2:] if "=" in a]
    # The same validation the job does first: every key known, every type right.
    cfg = load_config(cli._import(cli.COMMANDS[command][0]), config, overrides)
    assert str(getattr(cfg, "output_dir", "/mnt/s1ray")).startswith("/mnt/s1ray/")  # shared storage


def test_runtime_env_matches_jobs_runtime_env():
    inline = yaml.safe_load(rayjob()["spec"]["runtimeEnvYAML"])
    example = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    assert inline["env_vars"] == example["env_vars"]
    assert "working_dir" not in inline  # the code is in the image


def test_storage_and_secrets_come_from_refs_only():
    for name, g in groups().items():
        pod = g["template"]["spec"]
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
        for c in containers(g):
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert claims[mounts["/mnt/s1ray"]] == "s1ray-shared", name
            env = {e["name"]: e for e in c["env"]}
            assert env["S1RAY_STORAGE"]["value"] == "/mnt/s1ray"
            for var, entry in env.items():
                if is_secret_key(var):
                    assert "value" not in entry and entry["valueFrom"]["secretKeyRef"]["name"], var
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_nothing_is_exposed_outside_the_namespace():
    head = rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and head["enableIngress"] is False
    text = yaml.safe_dump_all(docs())  # values only: the comments may name what is NOT used
    for word in ("LoadBalancer", "NodePort", "hostNetwork: true", "0.0.0.0/0"):
        assert word not in text
    (policy,) = [d for d in docs() if d["kind"] == "NetworkPolicy"]
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    selected = policy["spec"]["podSelector"]["matchLabels"]
    for name, g in groups().items():
        labels = g["template"]["metadata"]["labels"]
        assert selected.items() <= labels.items(), f"{name} pods are not covered by the NetworkPolicy"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {}}]}]  # same namespace only


def test_no_credentials_in_manifest_or_dockerfile():
    for path in (MANIFEST, DOCKERFILE):
        text = path.read_text()
        for pattern in CREDENTIAL_PATTERNS:
            assert not re.search(pattern, text), f"{path.name}: credential-like text ({pattern})"
