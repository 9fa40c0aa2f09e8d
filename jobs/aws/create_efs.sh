#!/usr/bin/env bash
# Once per AWS account, before jobs/aws/create_iam.sh: the shared EFS file system cluster.yaml
# mounts at /mnt/s1ray, in Elastic throughput mode (throughput follows the load, up to the file
# system's elastic limits, instead of Bursting's ~100 MiB/s that made a 32B checkpoint take an
# hour; docs/paper-scale.md "Checkpoints and storage at 32B"), encrypted at rest, with one mount
# target per subnet in the cluster's security group, and an access point that makes every client
# uid 1000 / gid 100 (the container's `ray` user) in a root folder created 0750.
#   SUBNET_IDS="subnet-... subnet-..." SECURITY_GROUP_ID=sg-... [AWS_REGION=us-west-2] jobs/aws/create_efs.sh
# An existing file system: add EFS_ID=fs-... to switch it to Elastic and give it the access point.
# Prints the EFS_ID and EFS_AP lines for cluster.yaml's initialization_commands and create_iam.sh.
set -euo pipefail
: "${SECURITY_GROUP_ID:?set SECURITY_GROUP_ID to the security group of the cluster (sg-...)}"
AWS_REGION=${AWS_REGION:-us-west-2}
efs() { aws efs "$@" --region "$AWS_REGION"; }

if [ -z "${EFS_ID:-}" ]; then
  : "${SUBNET_IDS:?set SUBNET_IDS to the subnets of the cluster (one mount target each)}"
  EFS_ID=$(efs create-file-system --creation-token s1ray-shared --performance-mode generalPurpose \
           --throughput-mode elastic --encrypted --tags Key=Name,Value=s1ray-shared \
           --query FileSystemId --output text)
  until [ "$(efs describe-file-systems --file-system-id "$EFS_ID" \
             --query 'FileSystems[0].LifeCycleState' --output text)" = available ]; do sleep 5; done
  for subnet in $SUBNET_IDS; do
    efs create-mount-target --file-system-id "$EFS_ID" --subnet-id "$subnet" \
        --security-groups "$SECURITY_GROUP_ID" >/dev/null
  done
else
  efs update-file-system --file-system-id "$EFS_ID" --throughput-mode elastic >/dev/null
fi
EFS_AP=$(efs create-access-point --file-system-id "$EFS_ID" --posix-user Uid=1000,Gid=100 \
         --root-directory 'Path=/s1ray,CreationInfo={OwnerUid=1000,OwnerGid=100,Permissions=0750}' \
         --tags Key=Name,Value=s1ray --query AccessPointId --output text)
echo "EFS_ID=$EFS_ID EFS_AP=$EFS_AP"
