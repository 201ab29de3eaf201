"""The one root conftest: fake credentials, a fake Lambda context, event builders, moto and the handler.

Every test gets fake AWS credentials, region us-east-1, no custom endpoint and a fresh
`mlwarden.clients.client` cache (a client cached inside one `mock_aws` context must not
leak into the next). Handler tests use `aws` (moto with the alert topic and an SQS
queue subscribed to it, so alerts are read as a subscriber receives them) and
`handler` / `make_handler` (functions/<app>/app.py, block_public_s3 by default, imported fresh after the
environment is set, so its settings are re-read).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import itertools
import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mlwarden import clients
from mlwarden_cli.emulator import create_exemption_table, create_outcome_table, moto_server

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
EVENTS = ROOT / "events"
FUNCTIONS = ROOT / "functions"

ACCOUNT = "123456789012"
REGION = "us-east-1"
TOPIC_NAME = "mlwarden-alerts"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:{TOPIC_NAME}"
REMEDIATOR_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/BlockPublicS3Role"
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}

# Variables that would point boto3 somewhere real, or change how it behaves, if the
# developer's shell happens to set them.
_UNSET = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_S3_CONTROL",
    "AWS_ENDPOINT_URL_SNS",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "MLWARDEN_TRACING",
    "ALERT_TOPIC_ARN",
    "REMEDIATION_MODE",
    "EXEMPT_TAG_KEY",
    "REMEDIATOR_ROLE_ARN",
    "OUTCOME_TABLE",
    "FLAP_THRESHOLD",
    "FLAP_DIGEST_MINUTES",
    "ALERT_DEDUP_HOURS",
    "AWS_LAMBDA_FUNCTION_NAME",
    "TAG_PII_OBJECTS",
    "LOCK_PUBLIC_PII_BUCKETS",
    "STOP_UNENCRYPTED_JOBS",
    "AWS_ENDPOINT_URL_IAM",
    "REVERT_CRITICAL_POLICY_VERSIONS",
    "EXEMPTION_TABLE",
    "TRUST_EXEMPTION_TAGS",
    "MAX_EXEMPTION_DAYS",
    "MEMBER_ROLE_NAME",
    "ORGANIZATION_ID",
    "ENABLE_KEY_ROTATION",
    "HTTPS_ONLY_BUCKETS",
    "TRUSTED_ACCOUNT_IDS",
    "DEFAULT_ENCRYPTION_KEY_ARN",
)


@pytest.fixture(autouse=True)
def _fake_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path_factory.getbasetemp() / "no-aws-config"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    clients.client.cache_clear()
    yield
    clients.client.cache_clear()


# --- Lambda context --------------------------------------------------------------------------------------


@dataclass
class FakeLambdaContext:
    function_name: str = "mlwarden-BlockPublicS3"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:mlwarden-BlockPublicS3"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/mlwarden-BlockPublicS3"
    log_stream_name: str = "2026/01/01/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


# --- events ----------------------------------------------------------------------------------------------

_DEFAULT: Any = object()

DEFAULT_IDENTITY: dict[str, Any] = {
    "type": "AssumedRole",
    "principalId": "AROAEXAMPLEID:data-scientist",
    "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/DataScientist/data-scientist",
    "accountId": ACCOUNT,
    "accessKeyId": "ASIAEXAMPLEKEY",
    "sessionContext": {
        "attributes": {"mfaAuthenticated": "false", "creationDate": "2026-01-01T09:00:00Z"},
        "sessionIssuer": {
            "type": "Role",
            "principalId": "AROAEXAMPLEID",
            "arn": f"arn:aws:iam::{ACCOUNT}:role/DataScientist",
            "accountId": ACCOUNT,
            "userName": "DataScientist",
        },
    },
}


def wrap_cloudtrail(record: dict[str, Any], *, account: str | None = None, region: str | None = None) -> dict[str, Any]:
    """Wrap a raw CloudTrail record in the EventBridge envelope, as EventBridge delivers it."""
    service = str(record.get("eventSource", "s3.amazonaws.com")).split(".", 1)[0]
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "AWS API Call via CloudTrail",
        "source": f"aws.{service}",
        "account": account or record.get("recipientAccountId") or ACCOUNT,
        "time": record.get("eventTime", "2026-01-01T10:00:00Z"),
        "region": region or record.get("awsRegion") or REGION,
        "resources": [],
        "detail": record,
    }


def build_cloudtrail_event(
    event_name: str,
    bucket: str | None = None,
    *,
    request_parameters: Any = _DEFAULT,
    user_identity: Any = _DEFAULT,
    error_code: str | None = None,
    event_source: str = "s3.amazonaws.com",
    account: str = ACCOUNT,
    region: str = REGION,
) -> dict[str, Any]:
    if request_parameters is _DEFAULT:
        request_parameters = {"bucketName": bucket, "host": [f"{bucket}.s3.{region}.amazonaws.com"]} if bucket else {}
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": copy.deepcopy(DEFAULT_IDENTITY) if user_identity is _DEFAULT else user_identity,
        "eventTime": "2026-01-01T10:00:00Z",
        "eventSource": event_source,
        "eventName": event_name,
        "awsRegion": region,
        "sourceIPAddress": "203.0.113.7",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": request_parameters,
        "responseElements": None,
        "requestID": "EXAMPLE7D3B6C1A2",
        "eventID": str(uuid.uuid4()),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
    }
    if error_code is not None:
        record["errorCode"] = error_code
        record["errorMessage"] = "Access Denied" if error_code == "AccessDenied" else error_code
    return wrap_cloudtrail(record)


def build_config_event(
    rule: str,
    resource_type: str,
    resource_id: str,
    compliance: str,
    *,
    previous: str | None = "COMPLIANT",
    account: str = ACCOUNT,
    region: str = REGION,
) -> dict[str, Any]:
    """A `Config Rules Compliance Change` event (shape of AWS Config's ComplianceChangeNotification)."""
    qualifier = {"configRuleName": rule, "resourceType": resource_type, "resourceId": resource_id}
    detail: dict[str, Any] = {
        "resourceId": resource_id,
        "awsRegion": region,
        "awsAccountId": account,
        "configRuleName": rule,
        "recordVersion": "1.0",
        "configRuleARN": f"arn:aws:config:{region}:{account}:config-rule/config-rule-abc123",
        "messageType": "ComplianceChangeNotification",
        "newEvaluationResult": {
            "evaluationResultIdentifier": {
                "evaluationResultQualifier": qualifier,
                "orderingTimestamp": "2026-01-01T10:00:00.000Z",
            },
            "complianceType": compliance,
            "resultRecordedTime": "2026-01-01T10:00:01.000Z",
            "configRuleInvokedTime": "2026-01-01T10:00:00.500Z",
        },
        "notificationCreationTime": "2026-01-01T10:00:02.000Z",
        "resourceType": resource_type,
    }
    if previous is not None:
        detail["oldEvaluationResult"] = {
            "evaluationResultIdentifier": {
                "evaluationResultQualifier": qualifier,
                "orderingTimestamp": "2025-12-31T10:00:00.000Z",
            },
            "complianceType": previous,
        }
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Config Rules Compliance Change",
        "source": "aws.config",
        "account": account,
        "time": "2026-01-01T10:00:02Z",
        "region": region,
        "resources": [],
        "detail": detail,
    }


def build_macie_event(
    finding_type: str, bucket: str | None, *, account: str = ACCOUNT, region: str = REGION
) -> dict[str, Any]:
    """A `Macie Finding` event for a policy finding about one bucket."""
    detail: dict[str, Any] = {
        "schemaVersion": "1.0",
        "id": str(uuid.uuid4()),
        "accountId": account,
        "partition": "aws",
        "region": region,
        "type": finding_type,
        "title": "The S3 bucket is publicly accessible",
        "description": "The bucket's settings allow public access.",
        "severity": {"score": 3, "description": "High"},
        "createdAt": "2026-01-01T10:00:00Z",
        "updatedAt": "2026-01-01T10:00:00Z",
        "count": 1,
        "category": "POLICY",
        "resourcesAffected": {
            "s3Bucket": None
            if bucket is None
            else {
                "arn": f"arn:aws:s3:::{bucket}",
                "name": bucket,
                "owner": {"displayName": "owner", "id": "a" * 64},
                "publicAccess": {"effectivePermission": "PUBLIC"},
            },
            "s3Object": None,
        },
        "policyDetails": {"action": {"actionType": "AWS_API_CALL"}},
    }
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Macie Finding",
        "source": "aws.macie",
        "account": account,
        "time": "2026-01-01T10:00:00Z",
        "region": region,
        "resources": [],
        "detail": detail,
    }


@pytest.fixture
def cloudtrail_event() -> Callable[..., dict[str, Any]]:
    return build_cloudtrail_event


@pytest.fixture
def config_event() -> Callable[..., dict[str, Any]]:
    return build_config_event


@pytest.fixture
def macie_event() -> Callable[..., dict[str, Any]]:
    return build_macie_event


def load_sample(relative: str) -> dict[str, Any]:
    """One EventBridge event from events/ (the samples `sam local invoke` and replay use)."""
    event: dict[str, Any] = json.loads((EVENTS / relative).read_text(encoding="utf-8"))
    return event


@pytest.fixture
def sample_event() -> Callable[[str], dict[str, Any]]:
    return load_sample


@pytest.fixture
def real_record() -> Callable[..., dict[str, Any]]:
    """Load a raw CloudTrail record from tests/fixtures/real/ and wrap it in the EventBridge envelope.

    `overrides` replace top-level keys of the record (for example `recipientAccountId` to aim a
    recorded event at the moto account).
    """

    def load(relative: str, **overrides: Any) -> dict[str, Any]:
        record = json.loads((FIXTURES / "real" / relative).read_text(encoding="utf-8"))
        record.update(overrides)
        return wrap_cloudtrail(record)

    return load


# --- moto: the alert topic and a subscriber queue ----------------------------------------------------------


@dataclass(frozen=True)
class ReceivedAlert:
    """One SNS notification as an SQS subscriber (raw delivery off) receives it."""

    subject: str
    body: str
    attributes: dict[str, str]
    outcome: dict[str, Any]
    envelope: dict[str, Any]

    def line(self, label: str) -> str:
        """The body line starting with `label:` (for example "Undo"), without the label."""
        prefix = f"{label}:"
        for text in self.body.splitlines():
            if text.startswith(prefix):
                return text[len(prefix) :].strip()
        raise AssertionError(f"alert body has no {label!r} line:\n{self.body}")


def parse_notification(envelope: dict[str, Any]) -> ReceivedAlert:
    body = envelope["Message"]
    marker = "\nOutcome (JSON):\n"
    assert marker in body, f"alert body has no 'Outcome (JSON):' section:\n{body}"
    return ReceivedAlert(
        subject=envelope.get("Subject", ""),
        body=body,
        attributes={name: value["Value"] for name, value in envelope.get("MessageAttributes", {}).items()},
        outcome=json.loads(body.split(marker, 1)[1]),
        envelope=envelope,
    )


@functools.cache
def _test_client(service: str) -> Any:
    """The tests' own clients, built once: moto answers every client created after it is imported, and
    each `mock_aws()` context starts from empty state. (ML Warden's clients are rebuilt per test.)"""
    return boto3.client(service, region_name=REGION)


class AwsWorld:
    """moto state for a test: the alert topic, a queue subscribed to it, the outcome table, and S3 helpers."""

    def __init__(self) -> None:
        self.dynamodb = _test_client("dynamodb")
        self.outcome_table = create_outcome_table(self.dynamodb)
        self.exemption_table = create_exemption_table(self.dynamodb)
        self.s3 = _test_client("s3")
        self.s3control = _test_client("s3control")
        self.sns = _test_client("sns")
        self.sqs = _test_client("sqs")
        self.topic_arn = self.sns.create_topic(Name=TOPIC_NAME)["TopicArn"]
        self.queue_url = self.sqs.create_queue(QueueName="alerts-subscriber")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.sns.subscribe(
            TopicArn=self.topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "false"},
        )
        self._received: list[ReceivedAlert] = []

    def alerts(self) -> list[ReceivedAlert]:
        """Every alert the subscriber has received so far, oldest first."""
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
                "Messages", []
            )
            if not messages:
                return list(self._received)
            for message in messages:
                self._received.append(parse_notification(json.loads(message["Body"])))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def outcome_records(self) -> dict[str, dict[str, Any]]:
        """The outcome table's items by id, attribute values unwrapped."""
        items = self.dynamodb.scan(TableName=self.outcome_table)["Items"]
        return {item["id"]["S"]: {k: next(iter(v.values())) for k, v in item.items()} for item in items}

    def grant_exemption(
        self,
        resource: str,
        *,
        check: str = "all",
        days: int = 30,
        granted_days_ago: int = 0,
        granted_by: str = f"arn:aws:sts::{ACCOUNT}:assumed-role/SecurityTeam/alice",
    ) -> None:
        """A registry entry as `mlwarden exempt add` writes it, granted `granted_days_ago`, lasting `days`."""
        granted = datetime.now(UTC) - timedelta(days=granted_days_ago)
        self.dynamodb.put_item(
            TableName=self.exemption_table,
            Item={
                "resource": {"S": resource},
                "check": {"S": check},
                "reason": {"S": "public model cards, SEC-1234"},
                "granted_by": {"S": granted_by},
                "granted_at": {"S": granted.strftime("%Y-%m-%dT%H:%M:%SZ")},
                "expires_at": {"S": (granted.date() + timedelta(days=days)).isoformat()},
            },
        )

    def only_alert(self) -> ReceivedAlert:
        received = self.alerts()
        assert len(received) == 1, f"expected exactly one alert, got {len(received)}: {[a.subject for a in received]}"
        return received[0]

    # S3 state

    def bucket(
        self,
        name: str,
        *,
        acl: str | None = None,
        public_policy: bool = False,
        tags: dict[str, str] | None = None,
        block: dict[str, bool] | None = None,
    ) -> str:
        self.s3.create_bucket(Bucket=name)
        if acl:
            self.s3.put_bucket_acl(Bucket=name, ACL=acl)
        if public_policy:
            self.s3.put_bucket_policy(Bucket=name, Policy=json.dumps(public_read_policy(name)))
        if tags:
            self.s3.put_bucket_tagging(
                Bucket=name, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}
            )
        if block is not None:
            self.s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=block)
        return name

    def block_of(self, name: str) -> dict[str, bool] | None:
        try:
            config = self.s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        except self.s3.exceptions.ClientError as err:
            if err.response["Error"]["Code"] == "NoSuchPublicAccessBlockConfiguration":
                return None
            raise
        return dict(config)

    def tags_of(self, name: str) -> dict[str, str]:
        try:
            tag_set = self.s3.get_bucket_tagging(Bucket=name)["TagSet"]
        except self.s3.exceptions.ClientError as err:
            if err.response["Error"]["Code"] == "NoSuchTagSet":
                return {}
            raise
        return {tag["Key"]: tag["Value"] for tag in tag_set}

    def account_block(self, account: str = ACCOUNT) -> dict[str, bool] | None:
        try:
            config = self.s3control.get_public_access_block(AccountId=account)["PublicAccessBlockConfiguration"]
        except self.s3control.exceptions.ClientError as err:
            if err.response["Error"]["Code"] == "NoSuchPublicAccessBlockConfiguration":
                return None
            raise
        return dict(config)


def public_read_policy(bucket: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }


@pytest.fixture(scope="module")
def moto_server_url() -> Iterator[str]:
    """moto server over HTTP, one per test module (real concurrency: threads, sockets)."""
    with moto_server() as url:
        yield url


@pytest.fixture
def fresh_moto_server(moto_server_url: str) -> str:
    """The module's moto server, emptied for this test (a fresh account)."""
    request = urllib.request.Request(f"{moto_server_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=5)
    return moto_server_url


@pytest.fixture
def aws() -> Iterator[AwsWorld]:
    with mock_aws():
        clients.client.cache_clear()
        yield AwsWorld()
    clients.client.cache_clear()


# --- the handler -------------------------------------------------------------------------------------------

_module_ids = itertools.count()


def import_fresh(path: Path) -> ModuleType:
    """Import a handler file under a new module name, so its module-level settings are read again."""
    spec = importlib.util.spec_from_file_location(f"{path.parent.name}_app_{next(_module_ids)}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Handler:
    module: ModuleType
    context: FakeLambdaContext

    def __call__(self, event: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.module.lambda_handler(event, self.context)
        return result


@pytest.fixture
def make_handler(aws: AwsWorld, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Handler]:
    """Set the function's environment and import its handler (functions/<app>/app.py) fresh.

    Defaults match the template.
    """

    def make(
        *,
        app: str = "block_public_s3",
        mode: str = "enforce",
        topic_arn: str | None = None,
        exempt_tag_key: str = "mlwarden:exempt",
        remediator_role_arn: str = REMEDIATOR_ROLE_ARN,
        env: dict[str, str | None] | None = None,
    ) -> Handler:
        """`env` sets further variables after the defaults; None unsets one."""
        monkeypatch.setenv("ALERT_TOPIC_ARN", topic_arn or aws.topic_arn)
        monkeypatch.setenv("REMEDIATION_MODE", mode)
        monkeypatch.setenv("EXEMPT_TAG_KEY", exempt_tag_key)
        monkeypatch.setenv("REMEDIATOR_ROLE_ARN", remediator_role_arn)
        monkeypatch.setenv("OUTCOME_TABLE", aws.outcome_table)
        monkeypatch.setenv("EXEMPTION_TABLE", aws.exemption_table)
        for name, value in (env or {}).items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        return Handler(import_fresh(FUNCTIONS / app / "app.py"), FakeLambdaContext())

    return make


@pytest.fixture
def handler(make_handler: Callable[..., Handler]) -> Handler:
    return make_handler()
