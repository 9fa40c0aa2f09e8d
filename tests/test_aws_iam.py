"""jobs/aws/: least privilege for cluster.yaml's nodes. Workers can only read the project's bucket,
write under its s1ray/ prefix and delete only old checkpoints, mount the project's file system
through its access point, and pull the cluster image; the head adds only what Ray's autoscaler
calls, scoped to this cluster's instance types, AMI, VPC, security group and instances and the
worker role. create_iam.sh and create_efs.sh are run with a stand-in `aws` to check what they
would create; launch requests are checked against the head policy by a small evaluator of the
IAM features these policies use (Allow statements, ARN wildcards, four condition operators)."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from ray.autoscaler.tags import TAG_RAY_CLUSTER_NAME

REPO = Path(__file__).resolve().parents[1]
AWS = REPO / "jobs" / "aws"
ACCOUNT, REGION, BUCKET, EFS, AP = "111122223333", "us-west-2", "my-s1ray-bucket", "fs-0abc", "fsap-0def"
AMI, VPC, SG = "ami-0feedbeef1234567", "vpc-0aaa", "sg-0bbb"
IDS = {"S1RAY_BUCKET": BUCKET, "EFS_ID": EFS, "EFS_AP": AP, "AMI_ID": AMI, "VPC_ID": VPC,
       "SECURITY_GROUP_ID": SG, "AWS_ACCOUNT_ID": ACCOUNT, "AWS_REGION": REGION}
WORKER_ACTIONS = {
    "s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:PutObject", "s3:DeleteObject",
    "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
    "elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite",
    "ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability",
}
# What Ray's AWS node provider calls from the head (ray/autoscaler/_private/aws/node_provider.py).
AUTOSCALER_ACTIONS = {"ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:RunInstances", "ec2:CreateTags",
                      "ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances", "iam:PassRole"}


def fake_aws(tmp_path, outputs: str = "") -> tuple[Path, Path]:
    """A stand-in `aws` that records its arguments (one JSON list per call); ``outputs`` is Python
    code that may print an answer for ``argv``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    fake = bin_dir / "aws"
    fake.write_text("#!/usr/bin/env python3\nimport json, sys\nargv = sys.argv[1:]\n"
                    f"open({str(calls)!r}, 'a').write(json.dumps(argv) + '\\n')\n{outputs}\n")
    fake.chmod(0o755)
    return bin_dir, calls


def run_script(tmp_path, script: str, env: dict[str, str], outputs: str = "") -> list[list[str]]:
    bin_dir, calls = fake_aws(tmp_path, outputs)
    out = subprocess.run(["bash", str(AWS / script)], env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in calls.read_text().splitlines()]


def run_create_iam(tmp_path) -> list[list[str]]:
    return run_script(tmp_path, "create_iam.sh", IDS)


def rendered(argv: list[str], flag: str) -> dict:
    text = argv[argv.index(flag) + 1]
    assert "${" not in text, f"a placeholder was left in {text[:80]}"
    return json.loads(text)


def policies(tmp_path) -> dict[str, dict]:
    return {argv[argv.index("--role-name") + 1]: rendered(argv, "--policy-document")
            for argv in run_create_iam(tmp_path) if argv[:2] == ["iam", "put-role-policy"]}


def as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def statements(policy: dict) -> list[dict]:
    assert policy["Version"] == "2012-10-17"
    out = []
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
        actions, resources = as_list(st["Action"]), as_list(st["Resource"])
        assert all("*" not in a for a in actions), f"wildcard action in {st.get('Sid')}"
        out.append({**st, "Action": actions, "Resource": resources})
    return out


def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


# --- a small evaluator: is one action on one resource, with its request context, allowed? --------

def _condition_holds(condition: dict, context: dict) -> bool:
    for op, keys in condition.items():
        for key, wanted in keys.items():
            if key not in context:
                return False
            have, wanted = context[key], as_list(wanted)
            if op == "StringEquals" and str(have) not in wanted:
                return False
            if op == "Bool" and str(have).lower() not in [w.lower() for w in wanted]:
                return False
            if op == "NumericLessThanEquals" and not float(have) <= float(wanted[0]):
                return False
            if op not in ("StringEquals", "Bool", "NumericLessThanEquals"):
                raise AssertionError(f"the evaluator does not know condition operator {op}")
    return True


def allowed(policy: list[dict], action: str, resource: str, context: dict) -> bool:
    return any(action in st["Action"] and any(fnmatch.fnmatchcase(resource, r) for r in st["Resource"])
               and _condition_holds(st.get("Condition", {}), context) for st in policy)


def ec2_arn(kind: str, name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:ec2:{REGION}:{account}:{kind}/{name}"


def launch(instance_type="p5.48xlarge", ami=AMI, vpc=VPC, sg=SG, encrypted=True, hop_limit=1, tokens="required",
           key="ray-autoscaler_us-west-2", spot=False) -> list[tuple[str, dict]]:
    """The (resource, context) pairs EC2 authorises for one RunInstances call, as the autoscaler makes it."""
    vpc_arn = ec2_arn("vpc", vpc)
    pairs = [(ec2_arn("instance", "*"), {"ec2:InstanceType": instance_type, "ec2:MetadataHttpTokens": tokens,
                                         "ec2:MetadataHttpPutResponseHopLimit": hop_limit}),
             (f"arn:aws:ec2:{REGION}::image/{ami}", {}),
             (ec2_arn("subnet", "subnet-0123"), {"ec2:Vpc": vpc_arn}),
             (ec2_arn("network-interface", "*"), {"ec2:Vpc": vpc_arn}),
             (ec2_arn("security-group", sg), {"ec2:Vpc": vpc_arn}),
             (ec2_arn("volume", "*"), {"ec2:Encrypted": encrypted}),
             (ec2_arn("key-pair", key), {})]
    return pairs + ([(ec2_arn("spot-instances-request", "*"), {})] if spot else [])


def may_launch(head: list[dict], **request) -> bool:
    return all(allowed(head, "ec2:RunInstances", r, c) for r, c in launch(**request))


# --- tests -----------------------------------------------------------------------------------------

def test_script_creates_the_profiles_cluster_yaml_names(tmp_path):
    calls = run_create_iam(tmp_path)
    made = {argv[argv.index("--instance-profile-name") + 1] for argv in calls if argv[:2] == ["iam", "create-instance-profile"]}
    used = {name: n["node_config"]["IamInstanceProfile"]["Name"] for name, n in cluster()["available_node_types"].items()}
    assert used == {"head": "s1ray-head", "cpu_worker": "s1ray-worker", "gpu_h100": "s1ray-worker"}
    assert made == set(used.values())
    trust = json.loads((AWS / "ec2-trust.json").read_text())
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}]


@pytest.mark.parametrize("missing", ["S1RAY_BUCKET", "EFS_AP", "AMI_ID", "VPC_ID", "SECURITY_GROUP_ID"])
def test_script_refuses_to_run_without_the_ids_it_scopes_to(missing):
    env = {"PATH": "/usr/bin:/bin", **{k: v for k, v in IDS.items() if k != missing}}
    out = subprocess.run(["bash", str(AWS / "create_iam.sh")], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and missing in out.stderr


def test_workers_reach_only_the_project_bucket_file_system_and_image(tmp_path):
    worker = statements(policies(tmp_path)["s1ray-worker"])
    allowed_resources = {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*", f"arn:aws:s3:::{BUCKET}/s1ray/*",
                         f"arn:aws:s3:::{BUCKET}/s1ray/runs/*",
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


def test_workers_write_under_the_prefix_and_delete_only_old_checkpoints(tmp_path):
    worker = statements(policies(tmp_path)["s1ray-worker"])
    obj = f"arn:aws:s3:::{BUCKET}/"
    assert allowed(worker, "s3:GetObject", obj + "data/s1k.parquet", {})
    assert allowed(worker, "s3:PutObject", obj + "s1ray/runs/r/checkpoint_0000063/x", {})
    assert not allowed(worker, "s3:PutObject", obj + "data/s1k.parquet", {})  # no overwriting other data
    assert allowed(worker, "s3:DeleteObject", obj + "s1ray/runs/r/checkpoint_0000063/x", {})  # num_to_keep
    for elsewhere in ("data/s1k.parquet", "s1ray/models/final/model.safetensors", "s1ray/runs"):
        assert not allowed(worker, "s3:DeleteObject", obj + elsewhere, {}), elsewhere


def test_file_system_is_mounted_through_its_access_point_only(tmp_path):
    worker = statements(policies(tmp_path)["s1ray-worker"])
    fs = f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:file-system/{EFS}"
    ap = {"elasticfilesystem:AccessPointArn": f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:access-point/{AP}"}
    assert allowed(worker, "elasticfilesystem:ClientMount", fs, ap)
    assert not allowed(worker, "elasticfilesystem:ClientMount", fs, {})  # the root of the file system
    assert not allowed(worker, "elasticfilesystem:ClientRootAccess", fs, ap)


def test_efs_policy_admits_the_two_roles_over_tls_only(tmp_path):
    (call,) = [argv for argv in run_create_iam(tmp_path) if argv[:2] == ["efs", "put-file-system-policy"]]
    assert call[call.index("--file-system-id") + 1] == EFS
    policy = rendered(call, "--policy")
    allow, deny = policy["Statement"]
    assert allow["Effect"] == "Allow" and sorted(allow["Principal"]["AWS"]) == [
        f"arn:aws:iam::{ACCOUNT}:role/s1ray-head", f"arn:aws:iam::{ACCOUNT}:role/s1ray-worker"]
    assert allow["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"].endswith(f"access-point/{AP}")
    assert deny["Effect"] == "Deny" and deny["Principal"] == {"AWS": "*"} and deny["Action"] == "*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_head_adds_only_the_autoscaler_scoped_to_this_cluster(tmp_path):
    found = policies(tmp_path)
    head, worker = statements(found["s1ray-head"]), statements(found["s1ray-worker"])
    assert all(st in head for st in worker)  # drivers run on the head: same storage rights
    extra = [st for st in head if st not in worker]
    assert {a for st in extra for a in st["Action"]} == AUTOSCALER_ACTIONS
    cfg = cluster()
    for st in extra:
        acts = set(st["Action"])
        if acts & {"ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances"}:
            assert st["Condition"] == {"StringEquals": {f"aws:ResourceTag/{TAG_RAY_CLUSTER_NAME}": cfg["cluster_name"]}}
            assert st["Resource"] == [ec2_arn("instance", "*")]
        if acts == {"ec2:CreateTags"}:
            assert st["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
        if "ec2:RunInstances" in acts:
            assert "*" not in st["Resource"], st  # every resource type of a launch is scoped
    assert cfg["provider"]["region"] == REGION


def test_role_is_passed_to_ec2_only(tmp_path):
    head = statements(policies(tmp_path)["s1ray-head"])
    worker_role = f"arn:aws:iam::{ACCOUNT}:role/s1ray-worker"
    assert allowed(head, "iam:PassRole", worker_role, {"iam:PassedToService": "ec2.amazonaws.com"})
    assert not allowed(head, "iam:PassRole", worker_role, {"iam:PassedToService": "lambda.amazonaws.com"})
    assert not allowed(head, "iam:PassRole", worker_role, {})
    assert not allowed(head, "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/s1ray-head",
                       {"iam:PassedToService": "ec2.amazonaws.com"})


def test_head_launches_the_cluster_workers_and_nothing_else(tmp_path):
    head = statements(policies(tmp_path)["s1ray-head"])
    nodes = cluster()["available_node_types"]
    for name, node in nodes.items():
        if name == "head":
            continue  # the head is launched by `ray up` with the user's credentials
        nc = node["node_config"]
        assert nc["ImageId"] == nodes["head"]["node_config"]["ImageId"]  # one AMI: one id in the policy
        request = dict(instance_type=nc["InstanceType"], hop_limit=nc["MetadataOptions"]["HttpPutResponseHopLimit"],
                       tokens=nc["MetadataOptions"]["HttpTokens"],
                       encrypted=all(b["Ebs"]["Encrypted"] for b in nc["BlockDeviceMappings"]),
                       spot=nc.get("InstanceMarketOptions", {}).get("MarketType") == "spot")
        assert may_launch(head, **request), name  # what cluster.yaml asks for is allowed
    assert not may_launch(head, instance_type="p5e.48xlarge")      # another (or a bigger) type
    assert not may_launch(head, instance_type=nodes["head"]["node_config"]["InstanceType"])  # the head's own type
    assert not may_launch(head, ami="ami-0badbadbadbadbad0")        # another image
    assert not may_launch(head, vpc="vpc-0other")                   # another network
    assert not may_launch(head, sg="sg-0wideopen")                  # another security group
    assert not may_launch(head, encrypted=False)                    # an unencrypted disk
    assert not may_launch(head, hop_limit=2)                        # metadata reachable from a container hop
    assert not may_launch(head, tokens="optional")                  # IMDSv1
    assert not may_launch(head, key="someone-elses-key")


def test_create_efs_makes_an_elastic_encrypted_file_system_with_an_access_point(tmp_path):
    answers = ("ops = ' '.join(argv[:2])\n"
               "print({'efs create-file-system': 'fs-0new', 'efs describe-file-systems': 'available',\n"
               "       'efs create-access-point': 'fsap-0new'}.get(ops, ''))")
    env = {"SUBNET_IDS": "subnet-a subnet-b", "SECURITY_GROUP_ID": SG, "AWS_REGION": REGION}
    calls = run_script(tmp_path, "create_efs.sh", env, answers)
    (create,) = [a for a in calls if a[:2] == ["efs", "create-file-system"]]
    assert create[create.index("--throughput-mode") + 1] == "elastic" and "--encrypted" in create
    mounts = [a for a in calls if a[:2] == ["efs", "create-mount-target"]]
    assert sorted(a[a.index("--subnet-id") + 1] for a in mounts) == ["subnet-a", "subnet-b"]
    assert all(a[a.index("--security-groups") + 1] == SG and a[a.index("--file-system-id") + 1] == "fs-0new"
               for a in mounts)
    (ap,) = [a for a in calls if a[:2] == ["efs", "create-access-point"]]
    assert ap[ap.index("--posix-user") + 1] == "Uid=1000,Gid=100"
    assert "Permissions=0750" in ap[ap.index("--root-directory") + 1]
    assert all(a[a.index("--region") + 1] == REGION for a in calls)
    # An existing file system is switched to Elastic, not recreated.
    existing = tmp_path / "existing"
    existing.mkdir()
    calls = run_script(existing, "create_efs.sh", {**env, "EFS_ID": EFS}, answers)
    (update,) = [a for a in calls if a[:2] == ["efs", "update-file-system"]]
    assert update[update.index("--throughput-mode") + 1] == "elastic"
    assert not [a for a in calls if a[:2] == ["efs", "create-file-system"]]


def test_efs_settings_are_values_of_the_efs_api():
    """The CLI values above are the API's: checked against botocore's EFS model (offline)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("efs")
    create = model.operation_model("CreateFileSystem").input_shape.members
    assert "elastic" in create["ThroughputMode"].enum and "generalPurpose" in create["PerformanceMode"].enum
    assert "elastic" in model.operation_model("UpdateFileSystem").input_shape.members["ThroughputMode"].enum
    root = model.operation_model("CreateAccessPoint").input_shape.members["RootDirectory"].members
    assert set(root["CreationInfo"].members) == {"OwnerUid", "OwnerGid", "Permissions"}
    assert re.fullmatch(root["CreationInfo"].members["Permissions"].metadata["pattern"], "0750")
