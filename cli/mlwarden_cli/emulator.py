"""A moto server on 127.0.0.1 and a free port, for the demo and the integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


OUTCOME_TABLE = "mlwarden-outcomes"


def create_outcome_table(dynamodb: Any, name: str = OUTCOME_TABLE) -> str:
    """The outcome table as template.yaml declares it (key `id`, TTL on `expiration`), for moto."""
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"}
    )
    return name


EXEMPTION_TABLE = "mlwarden-exemptions"


def create_exemption_table(dynamodb: Any, name: str = EXEMPTION_TABLE) -> str:
    """The exemption registry as template.yaml declares it (key `resource`, sort key `check`), for moto."""
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "resource", "AttributeType": "S"},
            {"AttributeName": "check", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "resource", "KeyType": "HASH"}, {"AttributeName": "check", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


class EmulatorError(RuntimeError):
    """moto server did not start."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def moto_server(timeout: float = 30.0) -> Iterator[str]:
    """Start moto server, yield its endpoint URL, stop it on exit."""
    port = free_port()
    # moto server logs every request to stderr: a file, not a pipe, because nobody reads a pipe while the
    # server runs, and once its buffer is full the server blocks on its next log line and stops answering.
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, **FAKE_CREDENTIALS},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                stderr = log.read().decode(errors="replace")
                raise EmulatorError(f"moto server exited with {process.returncode}: {stderr[-500:]}")
            try:
                with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1):  # noqa: S310 - local http
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise EmulatorError(f"moto server did not answer on {url} within {timeout:.0f} s") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def refuse_assuming_missing_roles(sts: Any) -> None:
    """Make moto refuse, as AWS does, to assume a role that does not exist.

    moto lets any caller assume any role ARN, existing or not (its documented shortcut for switching
    accounts). AWS answers AccessDenied for a role that is missing or does not trust the caller, which is
    how a member account without member.yaml shows up; registered on an STS client, this asks moto's IAM
    of the role's account (through the assumed credentials) and answers AccessDenied when the role is not there.
    """
    import boto3  # noqa: PLC0415 - the emulator's own clients, not the one client factory's
    from botocore.awsrequest import AWSResponse  # noqa: PLC0415

    def remember_role(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["mlwarden_role_arn"] = params.get("RoleArn", "")

    def refuse(context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        role_arn = str(context.get("mlwarden_role_arn", ""))
        endpoint = sts.meta.endpoint_url
        probe = boto3.client("sts", endpoint_url=endpoint, region_name=sts.meta.region_name)
        credentials = probe.assume_role(RoleArn=role_arn, RoleSessionName="emulator-role-probe")["Credentials"]
        iam = boto3.client(
            "iam",
            endpoint_url=None if "amazonaws.com" in endpoint else endpoint,
            region_name=sts.meta.region_name,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )
        role_name = role_arn.rsplit("/", 1)[-1]
        if any(
            role["RoleName"] == role_name
            for page in iam.get_paginator("list_roles").paginate()
            for role in page["Roles"]
        ):
            return None
        message = f"User is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
        error = {"Error": {"Code": "AccessDenied", "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 403}}
        return AWSResponse(endpoint, 403, {}, None), error

    sts.meta.events.register("before-parameter-build.sts.AssumeRole", remember_role)
    sts.meta.events.register("before-call.sts.AssumeRole", refuse)
