"""The floor: plain boto3 making only the calls the decision needs, cheapest first, short-circuiting.

Prints one JSON line per bad resource found ({"kind", "resource", "why"}). The endpoint and credentials come
from the standard environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID...), as for every tool in the benchmark.

- buckets: ListBuckets; per bucket GetPublicAccessBlock; only when the block is not fully on, GetBucketAcl,
  and GetBucketPolicyStatus only when the ACL grants nothing public. One GetPublicAccessBlock for the account.
- policies: GetAccountAuthorizationDetails (customer-managed policies with every version's document, up to
  1,000 per page): no per-policy call at all.
- training jobs and notebooks: one list, one describe each (the list calls do not return the KMS keys).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"mode": "standard"}, max_pool_connections=10)
FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
PUBLIC_GROUPS = (
    "http://acs.amazonaws.com/groups/global/AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
)


_PRINTING = threading.Lock()


def report(kind: str, resource: str, why: str) -> None:
    line = json.dumps({"kind": kind, "resource": resource, "why": why})
    with _PRINTING:  # whole lines, from several threads
        print(line, flush=True)


def concurrently(func: Callable[[Any], None], items: Iterable[Any]) -> None:
    with ThreadPoolExecutor(max_workers=10) as pool:
        for _ in pool.map(func, items):
            pass


def buckets(s3: Any, s3control: Any, account: str) -> None:
    try:
        block = s3control.get_public_access_block(AccountId=account)["PublicAccessBlockConfiguration"]
    except ClientError:
        block = {}
    if not all(block.get(flag) for flag in FLAGS):
        report("account", f"AWS::::Account:{account}", "account-level block not fully on")

    def bucket(name: str) -> None:
        try:
            block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        except ClientError:
            block = {}
        if all(block.get(flag) for flag in FLAGS):
            return
        grants = s3.get_bucket_acl(Bucket=name)["Grants"]
        if any(grant["Grantee"].get("URI") in PUBLIC_GROUPS for grant in grants):
            report("bucket", name, "public by ACL")
            return
        try:
            public = s3.get_bucket_policy_status(Bucket=name)["PolicyStatus"]["IsPublic"]
        except ClientError:
            public = False
        report("bucket", name, "public by policy" if public else "no public-access block")

    names = [bucket["Name"] for page in s3.get_paginator("list_buckets").paginate() for bucket in page["Buckets"]]
    concurrently(bucket, names)


def _wildcards(document: Any) -> Iterator[str]:
    statements = document.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        if statement.get("Effect") != "Allow" or "Condition" in statement:
            continue
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if "*" in resources:
            yield from (action for action in actions if action == "*" or action.endswith(":*"))


def policies(iam: Any) -> None:
    pages = iam.get_paginator("get_account_authorization_details").paginate(Filter=["LocalManagedPolicy"])
    for page in pages:
        for policy in page.get("Policies", []):
            default = next(v for v in policy["PolicyVersionList"] if v["IsDefaultVersion"])
            document = default["Document"]
            wildcards = sorted(set(_wildcards(json.loads(document) if isinstance(document, str) else document)))
            if wildcards:
                report("policy", policy["Arn"], "allows " + ", ".join(wildcards) + " on *")


def sagemaker(client: Any) -> None:
    def job(name: str) -> None:
        job = client.describe_training_job(TrainingJobName=name)
        if not job["ResourceConfig"].get("VolumeKmsKeyId") or not job["OutputDataConfig"].get("KmsKeyId"):
            report("training_job", job["TrainingJobArn"], "no KMS key")

    def notebook(name: str) -> None:
        notebook = client.describe_notebook_instance(NotebookInstanceName=name)
        if (
            not notebook.get("KmsKeyId")
            or notebook.get("DirectInternetAccess") != "Disabled"
            or notebook.get("RootAccess") != "Disabled"
        ):
            report("notebook", notebook["NotebookInstanceArn"], "no KMS key, internet or root access")

    jobs = client.get_paginator("list_training_jobs").paginate(PaginationConfig={"PageSize": 100})
    concurrently(job, [summary["TrainingJobName"] for page in jobs for summary in page["TrainingJobSummaries"]])
    notebooks = client.get_paginator("list_notebook_instances").paginate(PaginationConfig={"PageSize": 100})
    concurrently(
        notebook, [summary["NotebookInstanceName"] for page in notebooks for summary in page["NotebookInstances"]]
    )


def _without_account_host_prefix(request: Any, **_: Any) -> None:
    """S3 Control puts the account id in front of the host: unresolvable in front of 127.0.0.1."""
    parts = urlsplit(request.url)
    host, _, rest = parts.netloc.partition(".")
    if host.isdigit() and rest.startswith("127.0.0.1"):
        request.url = urlunsplit(parts._replace(netloc=rest))


SCOPES = ("s3", "iam", "sagemaker")


def main(argv: list[str]) -> int:
    """argv: the scopes to sweep (s3, iam, sagemaker); all of them when none is named."""
    scopes = set(argv) or set(SCOPES)
    session = boto3.session.Session()
    if "s3" in scopes:
        account = session.client("sts", config=CONFIG).get_caller_identity()["Account"]
        s3control = session.client("s3control", config=CONFIG)
        s3control.meta.events.register("before-sign.s3-control.*", _without_account_host_prefix)
        buckets(session.client("s3", config=CONFIG), s3control, account)
    if "iam" in scopes:
        policies(session.client("iam", config=CONFIG))
    if "sagemaker" in scopes:
        sagemaker(session.client("sagemaker", config=CONFIG))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
