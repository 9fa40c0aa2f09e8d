"""jobs/aws/: least privilege for cluster.yaml's nodes. Workers can only read/write the project's
bucket and file system and pull the cluster image; the head adds only what Ray's autoscaler calls,
scoped to this cluster's instances and the worker role. create_iam.sh is run with a stand-in
`aws` to check what it would create."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from ray.autoscaler.tags import TAG_RAY_CLUSTER_NAME

REPO = Path(__file__).resolve().parents[1]
AWS = REPO / "jobs" / "aws"
ACCOUNT, REGION, BUCKET, EFS = "111122223333", "us-west-2", "my-s1ray-bucket", "fs-0abc"
WORKER_ACTIONS = {
    "s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:PutObject", "s3:DeleteObject",
    "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
    "elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite",
    "ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability",
}
# What Ray's AWS node provider calls from the head (ray/autoscaler/_private/aws/node_provider.py).
AUTOSCALER_ACTIONS = {"ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:RunInstances", "ec2:CreateTags",
                      "ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances", "iam:PassRole",
                      "ssm:GetParameters"}


def run_create_iam(tmp_path) -> list[str]:
    """Run create_iam.sh with a fake `aws` that records its arguments (one JSON list per call)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    fake = bin_dir / "aws"
    fake.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                    f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "S1RAY_BUCKET": BUCKET, "EFS_ID": EFS,
           "AWS_ACCOUNT_ID": ACCOUNT, "AWS_REGION": REGION}
    out = subprocess.run(["bash", str(AWS / "create_iam.sh")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in calls.read_text().splitlines()]


def policies(tmp_path) -> dict[str, dict]:
    found = {}
    for argv in run_create_iam(tmp_path):
        if argv[:2] == ["iam", "put-role-policy"]:
            role = argv[argv.index("--role-name") + 1]
            text = argv[argv.index("--policy-document") + 1]
            assert "${" not in text, f"{role}: a placeholder was left in the policy"
            found[role] = json.loads(text)
    return found


def statements(policy: dict) -> list[dict]:
    assert policy["Version"] == "2012-10-17"
    out = []
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        assert all("*" not in a for a in actions), f"wildcard action in {st.get('Sid')}"
        out.append({**st, "Action": actions, "Resource": resources})
    return out


def test_script_creates_the_profiles_cluster_yaml_names(tmp_path):
    calls = run_create_iam(tmp_path)
    made = {argv[argv.index("--instance-profile-name") + 1] for argv in calls if argv[:2] == ["iam", "create-instance-profile"]}
    nodes = yaml.safe_load((REPO / "cluster.yaml").read_text())["available_node_types"]
    used = {name: n["node_config"]["IamInstanceProfile"]["Name"] for name, n in nodes.items()}
    assert used == {"head": "s1ray-head", "cpu_worker": "s1ray-worker", "gpu_h100": "s1ray-worker"}
    assert made == set(used.values())
    trust = json.loads((AWS / "ec2-trust.json").read_text())
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}]


def test_script_refuses_to_run_without_bucket_and_file_system(tmp_path):
    out = subprocess.run(["bash", str(AWS / "create_iam.sh")], env={"PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.returncode != 0 and "S1RAY_BUCKET" in out.stderr


def test_workers_reach_only_the_project_bucket_file_system_and_image(tmp_path):
    worker = statements(policies(tmp_path)["s1ray-worker"])
    allowed_resources = {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*",
                         f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:file-system/{EFS}",
                         f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/s1ray"}
    actions = set()
    for st in worker:
        actions |= set(st["Action"])
        if st["Resource"] == ["*"]:
            assert st["Action"] == ["ecr:GetAuthorizationToken"], st  # the one action with no resource type
        else:
            assert set(st["Resource"]) <= allowed_resources, st
    assert actions == WORKER_ACTIONS
    assert not any(a.startswith(("ec2:", "iam:")) for a in actions)


def test_head_adds_only_the_autoscaler_scoped_to_this_cluster(tmp_path):
    found = policies(tmp_path)
    head, worker = statements(found["s1ray-head"]), statements(found["s1ray-worker"])
    assert all(st in head for st in worker)  # drivers run on the head: same storage rights
    extra = [st for st in head if st not in worker]
    assert {a for st in extra for a in st["Action"]} == AUTOSCALER_ACTIONS
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    for st in extra:
        acts = set(st["Action"])
        if acts & {"ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances"}:
            assert st["Condition"] == {"StringEquals": {f"aws:ResourceTag/{TAG_RAY_CLUSTER_NAME}": cluster["cluster_name"]}}
            assert st["Resource"] == [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*"]
        if "iam:PassRole" in acts:
            assert st["Resource"] == [f"arn:aws:iam::{ACCOUNT}:role/s1ray-worker"]
        if "ec2:RunInstances" in acts:
            assert st["Condition"] == {"StringEquals": {"aws:RequestedRegion": REGION}}
        if acts == {"ec2:CreateTags"}:
            assert st["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
        if "ssm:GetParameters" in acts:
            (resource,) = st["Resource"]
            image_ids = {n["node_config"]["ImageId"] for n in cluster["available_node_types"].values()}
            for image_id in image_ids:  # the AMI parameter the nodes resolve is covered
                parameter = image_id.removeprefix("resolve:ssm:")
                assert re.fullmatch(resource.replace("*", ".*"), f"arn:aws:ssm:{REGION}::parameter{parameter}")
    assert cluster["provider"]["region"] == REGION
