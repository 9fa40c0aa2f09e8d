#!/usr/bin/env bash
# Once per AWS account, after jobs/aws/create_efs.sh: the two instance profiles cluster.yaml names,
# from the policy documents next to this script (least privilege, docs/security.md "Cluster
# hardening"), and the EFS file system's policy that admits only these two roles:
#   s1ray-worker  CPU and GPU workers: read the project's S3 bucket, write under s1ray/ and delete
#                 only old checkpoints under s1ray/runs/; mount the project's EFS through its access
#                 point; pull the cluster image from ECR. Nothing else: no EC2, no IAM, no other bucket.
#   s1ray-head    the same, plus what Ray's autoscaler needs: launch only the worker instance types,
#                 from the pinned AMI, into the cluster's VPC with its security group, encrypted
#                 volumes and IMDSv2 with hop limit 1; stop / terminate / tag only instances tagged
#                 ray-cluster-name=s1ray; pass only the s1ray-worker role, and only to EC2.
# Run with credentials allowed to create IAM roles (ids: cluster.yaml's EDIT lines, create_efs.sh):
#   S1RAY_BUCKET=<bucket> EFS_ID=fs-... EFS_AP=fsap-... AMI_ID=ami-... VPC_ID=vpc-... \
#   SECURITY_GROUP_ID=sg-... [AWS_REGION=us-west-2] jobs/aws/create_iam.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${S1RAY_BUCKET:?set S1RAY_BUCKET to the S3 bucket of the project}"
: "${EFS_ID:?set EFS_ID to the shared EFS file system id (fs-..., from create_efs.sh)}"
: "${EFS_AP:?set EFS_AP to the file system access point id (fsap-..., from create_efs.sh)}"
: "${AMI_ID:?set AMI_ID to the AMI pinned in cluster.yaml (ami-...)}"
: "${VPC_ID:?set VPC_ID to the VPC the cluster runs in (vpc-...)}"
: "${SECURITY_GROUP_ID:?set SECURITY_GROUP_ID to the group cluster.yaml names (sg-...)}"
AWS_REGION=${AWS_REGION:-us-west-2}
AWS_ACCOUNT_ID=${AWS_ACCOUNT_ID:-$(aws sts get-caller-identity --query Account --output text)}

render() {  # a policy document with this account's names filled in
  local doc
  doc=$(cat "$here/$1")
  for var in S1RAY_BUCKET EFS_ID EFS_AP AMI_ID VPC_ID SECURITY_GROUP_ID AWS_REGION AWS_ACCOUNT_ID; do
    doc=${doc//"\${$var}"/"${!var}"}
  done
  printf '%s\n' "$doc"
}

for role in s1ray-worker s1ray-head; do
  aws iam create-role --role-name "$role" --assume-role-policy-document "file://$here/ec2-trust.json" >/dev/null
  aws iam put-role-policy --role-name "$role" --policy-name "$role" \
      --policy-document "$(render "$role-policy.json")"
  aws iam create-instance-profile --instance-profile-name "$role" >/dev/null
  aws iam add-role-to-instance-profile --instance-profile-name "$role" --role-name "$role"
done
# The roles exist now, so the file system may name them: only they mount, only through the access
# point, and only over TLS.
aws efs put-file-system-policy --region "$AWS_REGION" --file-system-id "$EFS_ID" --policy "$(render efs-policy.json)" >/dev/null
echo "instance profiles s1ray-head and s1ray-worker are ready (cluster.yaml node_config.IamInstanceProfile)"
