#!/usr/bin/env bash
# Once per AWS account: the two instance profiles cluster.yaml names, from the policy documents
# next to this script (least privilege, README "Least privilege"):
#   s1ray-worker  CPU and GPU workers: read/write the project's S3 bucket and EFS file system, pull
#                 the cluster image from ECR. Nothing else: no EC2, no IAM, no other bucket.
#   s1ray-head    the same, plus what Ray's autoscaler needs: start instances in the region, stop /
#                 terminate / tag only instances tagged ray-cluster-name=s1ray, pass only the
#                 s1ray-worker role, read the public Deep Learning AMI parameter.
# Run with credentials allowed to create IAM roles:
#   S1RAY_BUCKET=<bucket> EFS_ID=fs-... [AWS_REGION=us-west-2] jobs/aws/create_iam.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${S1RAY_BUCKET:?set S1RAY_BUCKET to the S3 bucket of the project}"
: "${EFS_ID:?set EFS_ID to the shared EFS file system id (fs-...)}"
AWS_REGION=${AWS_REGION:-us-west-2}
AWS_ACCOUNT_ID=${AWS_ACCOUNT_ID:-$(aws sts get-caller-identity --query Account --output text)}

render() {  # a policy document with this account's names filled in
  sed -e "s|\${S1RAY_BUCKET}|$S1RAY_BUCKET|g" -e "s|\${EFS_ID}|$EFS_ID|g" \
      -e "s|\${AWS_REGION}|$AWS_REGION|g" -e "s|\${AWS_ACCOUNT_ID}|$AWS_ACCOUNT_ID|g" "$here/$1"
}

for role in s1ray-worker s1ray-head; do
  aws iam create-role --role-name "$role" --assume-role-policy-document "file://$here/ec2-trust.json" >/dev/null
  aws iam put-role-policy --role-name "$role" --policy-name "$role" \
      --policy-document "$(render "$role-policy.json")"
  aws iam create-instance-profile --instance-profile-name "$role" >/dev/null
  aws iam add-role-to-instance-profile --instance-profile-name "$role" --role-name "$role"
done
echo "instance profiles s1ray-head and s1ray-worker are ready (cluster.yaml node_config.IamInstanceProfile)"
