"""The benchmark account: N buckets, N/2 policies, N/10 training jobs, N/20 notebooks, and which of them are bad.

Seeded in us-east-1 of a moto server, as issue 13 asks:
- buckets: a tenth public by ACL (no block), a tenth private without a block, the rest fully blocked; every
  fifth bucket carries a tag, so that tags are there to read;
- customer-managed policies: a tenth grant `*` on `*` (admin), a tenth `s3:*` on `*`, the rest one read on
  one bucket's objects;
- training jobs: half without KMS keys (volume and output), half with both; network isolation on for all;
- notebook instances: half with the defaults (no KMS key, direct internet access, root access), half with a
  KMS key, no direct internet access and no root access.

The account-level public-access block is left unset (as in a new account). `GroundTruth` names every bad
resource by kind, which is how each tool's findings are scored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3

REGION = "us-east-1"
ALERT_TOPIC = "mlwarden-bench-alerts"
ALL_ON = dict.fromkeys(("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True)
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
ROLE = "arn:aws:iam::123456789012:role/bench-sagemaker"
# The kinds of resource scored, in report order.
KINDS = ("bucket", "policy", "training_job", "notebook")


@dataclass
class GroundTruth:
    """Every seeded resource by kind, and the bad ones (what a sweep should find) by kind."""

    n: int
    resources: dict[str, set[str]] = field(default_factory=lambda: {kind: set() for kind in KINDS})
    bad: dict[str, set[str]] = field(default_factory=lambda: {kind: set() for kind in KINDS})
    # Buckets public by ACL: a subset of the bad buckets, reported apart.
    public_buckets: set[str] = field(default_factory=set)

    def add(self, kind: str, name: str, *, bad: bool) -> None:
        self.resources[kind].add(name)
        if bad:
            self.bad[kind].add(name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "resources": {kind: len(names) for kind, names in self.resources.items()},
            "bad": {kind: len(names) for kind, names in self.bad.items()},
            "public_buckets": len(self.public_buckets),
        }


def bucket_name(index: int) -> str:
    return f"bench-bucket-{index:05d}"


def policy_name(index: int) -> str:
    return f"bench-policy-{index:05d}"


def _statement(index: int) -> dict[str, Any]:
    if index % 10 == 0:
        return {"Effect": "Allow", "Action": "*", "Resource": "*"}
    if index % 10 == 1:
        return {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    return {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket_name(index)}/*"}


def seed(endpoint: str, n: int, *, threads: int = 8) -> GroundTruth:
    """Seed the account behind `endpoint` and return what is bad in it."""
    session = boto3.session.Session(region_name=REGION)
    s3 = session.client("s3", endpoint_url=endpoint)
    iam = session.client("iam", endpoint_url=endpoint)
    sagemaker = session.client("sagemaker", endpoint_url=endpoint)
    session.client("sns", endpoint_url=endpoint).create_topic(Name=ALERT_TOPIC)
    truth = GroundTruth(n)

    def bucket(index: int) -> None:
        name = bucket_name(index)
        s3.create_bucket(Bucket=name)
        if index % 10 == 0:
            s3.put_bucket_acl(Bucket=name, ACL="public-read")
        elif index % 10 != 1:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=ALL_ON)
        if index % 5 == 4:
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [{"Key": "team", "Value": "ml"}]})

    def policy(index: int) -> None:
        document = {"Version": "2012-10-17", "Statement": [_statement(index)]}
        iam.create_policy(PolicyName=policy_name(index), PolicyDocument=json.dumps(document))

    def training_job(index: int) -> None:
        encrypted = index % 2 == 1
        output: dict[str, Any] = {"S3OutputPath": f"s3://{bucket_name(index)}/output"}
        resources: dict[str, Any] = {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
        if encrypted:
            output["KmsKeyId"] = KMS_KEY
            resources["VolumeKmsKeyId"] = KMS_KEY
        sagemaker.create_training_job(
            TrainingJobName=f"bench-job-{index:05d}",
            AlgorithmSpecification={"TrainingImage": "bench/train:1", "TrainingInputMode": "File"},
            RoleArn=ROLE,
            OutputDataConfig=output,
            ResourceConfig=resources,
            StoppingCondition={"MaxRuntimeInSeconds": 3600},
            EnableNetworkIsolation=True,
        )

    def notebook(index: int) -> None:
        locked: dict[str, Any] = {}
        if index % 2 == 1:
            locked = {
                "KmsKeyId": KMS_KEY,
                "DirectInternetAccess": "Disabled",
                "RootAccess": "Disabled",
                "SubnetId": "subnet-0bench",
                "SecurityGroupIds": ["sg-0bench"],
            }
        sagemaker.create_notebook_instance(
            NotebookInstanceName=f"bench-notebook-{index:05d}", InstanceType="ml.t3.medium", RoleArn=ROLE, **locked
        )

    _run(threads, bucket, range(n))
    _run(threads, policy, range(n // 2))
    _run(threads, training_job, range(n // 10))
    _run(threads, notebook, range(n // 20))

    for index in range(n):
        truth.add("bucket", bucket_name(index), bad=index % 10 in (0, 1))
        if index % 10 == 0:
            truth.public_buckets.add(bucket_name(index))
    for index in range(n // 2):
        truth.add("policy", policy_name(index), bad=index % 10 in (0, 1))
    for index in range(n // 10):
        truth.add("training_job", f"bench-job-{index:05d}", bad=index % 2 == 0)
    for index in range(n // 20):
        truth.add("notebook", f"bench-notebook-{index:05d}", bad=index % 2 == 0)
    return truth


def _run(threads: int, func: Callable[[int], None], indexes: Iterable[int]) -> None:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(func, indexes):
            pass


def kind_and_name(resource: str) -> tuple[str, str] | None:
    """The seeded kind and name behind a tool's resource id or ARN (bucket ARN or name, policy ARN, job ARN...)."""
    name = resource.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    for prefix, kind in (
        ("bench-bucket-", "bucket"),
        ("bench-policy-", "policy"),
        ("bench-job-", "training_job"),
        ("bench-notebook-", "notebook"),
    ):
        if name.startswith(prefix):
            return kind, name
    return None


def score(truth: GroundTruth, reported: Iterable[str]) -> dict[str, Any]:
    """Bad resources found out of those seeded, by kind, and seeded good resources reported (false alarms)."""
    found: dict[str, set[str]] = {kind: set() for kind in KINDS}
    other = set()
    for resource in reported:
        known = kind_and_name(resource)
        if known is None:
            other.add(resource)
        else:
            found[known[0]].add(known[1])
    result: dict[str, Any] = {"found": {}, "false_alarms": {}, "other_findings": len(other)}
    for kind in KINDS:
        result["found"][kind] = len(found[kind] & truth.bad[kind])
        result["false_alarms"][kind] = len(found[kind] - truth.bad[kind])
    result["found_public_buckets"] = len(found["bucket"] & truth.public_buckets)
    result["found_total"] = sum(result["found"].values())
    result["bad_total"] = sum(len(names) for names in truth.bad.values())
    return result
