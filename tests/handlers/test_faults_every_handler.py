"""Fault injection for every handler in functions/: one scenario per handler, the same six faults for each.

Each scenario builds, in moto, a resource that makes a genuine event lead to an action and an alert, and
names the handler's write (the botocore operation), a read to throttle at the HTTP layer and how the
resource disappears. The faults:

1. the first call of a read is throttled: botocore retries it and the outcome is the normal one;
2. AccessDenied on the write: `failed`, the alert names the missing permission, the handler raises;
3. the resource is deleted between the event and the fix: `ignored` with a reason, no alert, no raise;
4. SNS down after the action: AlertDeliveryFailed, the action stands, the retry sends only the alert;
5. DynamoDB (the outcome table) unavailable: the action still happens and is alerted;
6. the CloudTrail record of the handler's own write: the loop guard ignores it, or no rule routes it.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import boto3
import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from moto.kms.models import kms_backends
from moto.sagemaker.models import sagemaker_backends

from mlwarden import clients
from mlwarden.errors import AlertDeliveryFailed, AwsCallFailed, RemediationFailed
from mlwarden.rules.bucket_policy import requires_https
from mlwarden_cli.template import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
ACCOUNT = "123456789012"
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
LOOP_GUARD = "change made by ML Warden's own role (loop guard): the resource is as ML Warden sets it"


# --- helpers: answer, count and throttle calls of ML Warden's own clients ----------------------------------


class _Http:
    def __init__(self, status: int) -> None:
        self.status_code = status


def _service(client: Any) -> str:
    return str(client.meta.service_model.service_name)


def deny_calls(client: Any, operation: str, code: str, times: int = 1) -> list[str]:
    """Answer the next `times` calls of `operation` with a 403 `code` (first in line, before any emulation)."""
    answered: list[str] = []
    remaining = itertools.count(times, -1)

    def answer(model: Any, **_: Any) -> Any:
        if next(remaining) <= 0:
            return None
        answered.append(model.name)
        return _Http(403), {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": 403}}

    client.meta.events.register_first(f"before-call.{_service(client)}.{operation}", answer)
    return answered


def count_calls(client: Any, operation: str = "*") -> list[str]:
    """Every call of `operation` the handler makes (counted first in line, so emulated calls count too)."""
    calls: list[str] = []
    client.meta.events.register_first(
        f"before-call.{_service(client)}.{operation}", lambda model, **_: calls.append(model.name)
    )
    return calls


def fail_next_publish() -> None:
    sns = clients.client("sns", "us-east-1")
    remaining = itertools.count(1, -1)

    def answer(**_: Any) -> Any:
        if next(remaining) <= 0:
            return None
        return _Http(500), {"Error": {"Code": "InternalError", "Message": "SNS is down"}}

    sns.meta.events.register_first("before-call.sns.Publish", answer)


class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield self._body


class Throttle:
    """An HTTP-level throttling answer to the first request `matches` accepts, below botocore's retries.

    Only ever aimed at a READ: moto's own before-send hook still executes the request it answers.
    """

    def __init__(self, service: str, matches: Callable[[Any], bool], status: int, content_type: str, body: bytes):
        self.service = service
        self.matches = matches
        self.status = status
        self.content_type = content_type
        self.body = body
        self.throttled: list[str] = []

    def install(self) -> None:
        def throttle_once(request: Any, **_: Any) -> AWSResponse | None:
            if not self.throttled and self.matches(request):
                self.throttled.append(request.url)
                return AWSResponse(request.url, self.status, {"Content-Type": self.content_type}, _Body(self.body))
            return None

        clients.client(self.service).meta.events.register_first(f"before-send.{self.service}", throttle_once)


def _body(request: Any) -> bytes:
    body = request.body or b""
    return body if isinstance(body, bytes) else str(body).encode()


SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>R1</RequestId></Error>"
)


def s3_throttle(query: str) -> Throttle:
    """S3 answers an overloaded GET with 503 SlowDown."""
    return Throttle(
        "s3",
        lambda request: request.method == "GET" and query in request.url,
        503,
        "application/xml",
        SLOW_DOWN,
    )


def own_identity(role: str) -> dict[str, Any]:
    """The userIdentity of a call made by a Lambda session of ML Warden's role `role`."""
    return {
        "type": "AssumedRole",
        "principalId": f"AROAOWNROLEID:mlwarden-{role}",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/mlwarden-{role}",
        "accountId": ACCOUNT,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": "AROAOWNROLEID",
                "arn": f"arn:aws:iam::{ACCOUNT}:role/{role}",
                "accountId": ACCOUNT,
                "userName": role,
            }
        },
    }


# --- the scenarios: one per handler --------------------------------------------------------------------------


class Scenario:
    app: ClassVar[str]
    function: ClassVar[str]  # logical id in template.yaml
    role: ClassVar[str]  # its own role (REMEDIATOR_ROLE_ARN)
    env: ClassVar[dict[str, str | None]] = {}
    write_service: ClassVar[str]
    write: ClassVar[str]  # botocore operation of the action
    permission: ClassVar[str]  # what the failed alert must name
    denied_code: ClassVar[str] = "AccessDenied"
    outcome: ClassVar[str]  # the normal outcome of the genuine event

    def __init__(self, aws: Any, cloudtrail_event: Callable[..., dict[str, Any]]) -> None:
        self.aws = aws
        self.cloudtrail_event = cloudtrail_event

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{ACCOUNT}:role/{self.role}"

    def arrange(self) -> None:
        """Create the resource so that the event leads to the action."""
        raise NotImplementedError

    def event(self) -> dict[str, Any]:
        raise NotImplementedError

    def throttle(self) -> Throttle:
        raise NotImplementedError

    def delete(self) -> None:
        raise NotImplementedError

    def acted(self) -> bool:
        """The state shows the action."""
        raise NotImplementedError

    def own_writes(self) -> list[dict[str, Any]]:
        """The CloudTrail records of this handler's own writes, made by its own role."""
        raise NotImplementedError


class BlockPublicS3(Scenario):
    app = "block_public_s3"
    function = "BlockPublicS3Function"
    role = "BlockPublicS3Role"
    write_service = "s3"
    write = "PutPublicAccessBlock"
    permission = "s3:PutBucketPublicAccessBlock"
    outcome = "remediated"
    bucket = "training-data"

    def arrange(self) -> None:
        self.aws.bucket(self.bucket, acl="public-read")

    def event(self) -> dict[str, Any]:
        return self.cloudtrail_event("PutBucketAcl", self.bucket)

    def throttle(self) -> Throttle:
        return s3_throttle("publicAccessBlock")

    def delete(self) -> None:
        self.aws.s3.delete_bucket(Bucket=self.bucket)

    def acted(self) -> bool:
        return bool(self.aws.block_of(self.bucket) == ALL_ON)

    def own_writes(self) -> list[dict[str, Any]]:
        parameters = {"bucketName": self.bucket, "PublicAccessBlockConfiguration": ALL_ON, "publicAccessBlock": ""}
        return [
            self.cloudtrail_event(
                "PutBucketPublicAccessBlock", request_parameters=parameters, user_identity=own_identity(self.role)
            )
        ]


class TagPiiBucket(Scenario):
    app = "tag_pii_bucket"
    function = "TagPiiBucketFunction"
    role = "TagPiiBucketRole"
    write_service = "s3"
    write = "PutBucketTagging"
    permission = "s3:PutBucketTagging"
    outcome = "remediated"
    bucket = "mlw-training-data-acl"  # the bucket events/macie/sensitive-data-personal.json names

    def arrange(self) -> None:
        self.aws.bucket(self.bucket, tags={"team": "ml-research"}, block=ALL_ON)

    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads((ROOT / "events/macie/sensitive-data-personal.json").read_text())
        return copy.deepcopy(event)

    def throttle(self) -> Throttle:
        return s3_throttle("?tagging")

    def delete(self) -> None:
        self.aws.s3.delete_bucket(Bucket=self.bucket)

    def acted(self) -> bool:
        return bool(self.aws.tags_of(self.bucket).get("mlwarden:pii") == "true")

    def own_writes(self) -> list[dict[str, Any]]:
        tagging = {"bucketName": self.bucket, "Tagging": {"TagSet": {"Tag": []}}, "tagging": ""}
        lock = {"bucketName": self.bucket, "PublicAccessBlockConfiguration": ALL_ON, "publicAccessBlock": ""}
        return [
            self.cloudtrail_event(
                "PutBucketTagging", request_parameters=tagging, user_identity=own_identity(self.role)
            ),
            # Its lock of a public PII bucket: routed to block_public_s3 (another role), never back to itself.
            self.cloudtrail_event(
                "PutBucketPublicAccessBlock", request_parameters=lock, user_identity=own_identity(self.role)
            ),
        ]


TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)
S3_EVERYTHING = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Sid": "AllS3", "Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
)
IAM_THROTTLED = (
    b'<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type>'
    b"<Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>R1</RequestId></ErrorResponse>"
)


class FlagWildcardIam(Scenario):
    app = "flag_wildcard_iam"
    function = "FlagWildcardIamFunction"
    role = "FlagWildcardIamRole"
    write_service = "iam"
    write = "TagRole"
    permission = "iam:TagRole"
    outcome = "flagged"
    role_name = "mlw-data-scientist"

    @property
    def iam(self) -> Any:
        return boto3.client("iam", region_name="us-east-1")

    def arrange(self) -> None:
        self.iam.create_role(RoleName=self.role_name, AssumeRolePolicyDocument=TRUST)
        self.iam.put_role_policy(RoleName=self.role_name, PolicyName="inline", PolicyDocument=S3_EVERYTHING)

    def event(self) -> dict[str, Any]:
        parameters = {"roleName": self.role_name, "policyName": "inline", "policyDocument": S3_EVERYTHING}
        return self.cloudtrail_event("PutRolePolicy", request_parameters=parameters, event_source="iam.amazonaws.com")

    def throttle(self) -> Throttle:
        return Throttle(
            "iam", lambda request: b"Action=GetRolePolicy" in _body(request), 400, "text/xml", IAM_THROTTLED
        )

    def delete(self) -> None:
        self.iam.delete_role_policy(RoleName=self.role_name, PolicyName="inline")
        self.iam.delete_role(RoleName=self.role_name)

    def acted(self) -> bool:
        tags = {t["Key"]: t["Value"] for t in self.iam.list_role_tags(RoleName=self.role_name)["Tags"]}
        return tags.get("mlwarden:wildcard") == "HIGH"

    def own_writes(self) -> list[dict[str, Any]]:
        identity = own_identity(self.role)
        tag = {"roleName": self.role_name, "tags": [{"key": "mlwarden:wildcard", "value": "HIGH"}]}
        policy_arn = f"arn:aws:iam::{ACCOUNT}:policy/ml-admin"
        revert = {"policyArn": policy_arn, "versionId": "v1"}  # REVERT_CRITICAL_POLICY_VERSIONS=true
        return [
            self.cloudtrail_event(
                "TagRole", request_parameters=tag, user_identity=identity, event_source="iam.amazonaws.com"
            ),
            # The optional revert's write IS routed back (SetDefaultPolicyVersion is in the rule).
            self.cloudtrail_event(
                "SetDefaultPolicyVersion",
                request_parameters=revert,
                user_identity=identity,
                event_source="iam.amazonaws.com",
            ),
        ]


JSON_THROTTLED = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()


def json_throttle(service: str, operation: str) -> Throttle:
    """A JSON-protocol service (SageMaker, CloudTrail) answers an overloaded call with 400 ThrottlingException."""
    return Throttle(
        service,
        lambda request: request.headers.get("X-Amz-Target", b"").endswith(operation.encode()),
        400,
        "application/x-amz-json-1.1",
        JSON_THROTTLED,
    )


class CheckSageMakerEncryption(Scenario):
    """StopUnencryptedJobs=true, so the handler has an AWS write to fail (its default is flag + alert).

    moto 5.2.5 completes training jobs at once and lacks StopTrainingJob: the moto job is shown as
    running (after-call on DescribeTrainingJob) and StopTrainingJob is answered here, turning it Stopping.
    """

    app = "check_sagemaker_encryption"
    function = "CheckSageMakerEncryptionFunction"
    role = "CheckSageMakerEncryptionRole"
    env: ClassVar[dict[str, str | None]] = {"STOP_UNENCRYPTED_JOBS": "true"}
    write_service = "sagemaker"
    write = "StopTrainingJob"
    permission = "sagemaker:StopTrainingJob"
    denied_code = "AccessDeniedException"
    outcome = "remediated"
    job = "churn-unencrypted"

    def arrange(self) -> None:
        self.aws.bucket("patient-records", tags={"mlwarden:pii": "true"})
        boto3.client("sagemaker", region_name="us-east-1").create_training_job(
            TrainingJobName=self.job,
            AlgorithmSpecification={"TrainingImage": "xgboost:1.7", "TrainingInputMode": "File"},
            RoleArn=f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution",
            InputDataConfig=[
                {
                    "ChannelName": "train",
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://patient-records/train/"}},
                }
            ],
            OutputDataConfig={"S3OutputPath": "s3://model-artifacts/out/"},
            ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            StoppingCondition={"MaxRuntimeInSeconds": 3600},
        )
        self.status = "InProgress"
        sagemaker = clients.client("sagemaker")

        def running(parsed: dict[str, Any], **_: Any) -> None:
            if "TrainingJobStatus" in parsed:
                parsed["TrainingJobStatus"] = self.status

        def stop(**_: Any) -> Any:
            self.status = "Stopping"
            return _Http(200), {"ResponseMetadata": {"HTTPStatusCode": 200}}

        sagemaker.meta.events.register("after-call.sagemaker.DescribeTrainingJob", running)
        sagemaker.meta.events.register("before-call.sagemaker.StopTrainingJob", stop)

    def event(self) -> dict[str, Any]:
        return self.cloudtrail_event(
            "CreateTrainingJob",
            request_parameters={"trainingJobName": self.job},
            event_source="sagemaker.amazonaws.com",
        )

    def throttle(self) -> Throttle:
        return json_throttle("sagemaker", "DescribeTrainingJob")

    def delete(self) -> None:
        # SageMaker has no DeleteTrainingJob; a job that is gone answers Describe* as one that never was.
        del sagemaker_backends[ACCOUNT]["us-east-1"].training_jobs[self.job]

    def acted(self) -> bool:
        return self.status == "Stopping"

    def own_writes(self) -> list[dict[str, Any]]:
        stop = self.cloudtrail_event(
            "StopTrainingJob",
            request_parameters={"trainingJobName": self.job},
            user_identity=own_identity(self.role),
            event_source="sagemaker.amazonaws.com",
        )
        # A stop also emits a state change (Stopping), which carries no identity: only InProgress is routed.
        state_change = {
            "version": "0",
            "id": "5b1c7a2e-0000-0000-0000-000000000001",
            "detail-type": "SageMaker Training Job State Change",
            "source": "aws.sagemaker",
            "account": ACCOUNT,
            "time": "2026-01-01T10:00:05Z",
            "region": "us-east-1",
            "resources": [f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/{self.job}"],
            "detail": {"TrainingJobName": self.job, "TrainingJobStatus": "Stopping"},
        }
        return [stop, state_change]


class WatchInputs(Scenario):
    """A StopLogging on the trail that feeds ML Warden: started again (the issue's contract)."""

    app = "watch_inputs"
    function = "WatchInputsFunction"
    role = "WatchInputsRole"
    env: ClassVar[dict[str, str | None]] = {
        "OWN_NAME_PREFIX": "mlwarden-",
        "CANARY_PARAMETER": "/mlwarden/liveness-canary",
        "CANARY_ROLE_NAME": "mlwarden-liveness-canary",
    }
    write_service = "cloudtrail"
    write = "StartLogging"
    permission = "cloudtrail:StartLogging"
    denied_code = "AccessDeniedException"
    outcome = "remediated"
    trail = "mlw-management-events"

    @property
    def cloudtrail(self) -> Any:
        return boto3.client("cloudtrail", region_name="us-east-1")

    def arrange(self) -> None:
        self.aws.bucket("mlw-trail-logs")
        self.cloudtrail.create_trail(Name=self.trail, S3BucketName="mlw-trail-logs")
        self.cloudtrail.start_logging(Name=self.trail)
        self.cloudtrail.stop_logging(Name=self.trail)

    def event(self) -> dict[str, Any]:
        return self.cloudtrail_event(
            "StopLogging", request_parameters={"name": self.trail}, event_source="cloudtrail.amazonaws.com"
        )

    def throttle(self) -> Throttle:
        return json_throttle("cloudtrail", "GetTrailStatus")

    def delete(self) -> None:
        self.cloudtrail.delete_trail(Name=self.trail)

    def acted(self) -> bool:
        return bool(self.cloudtrail.get_trail_status(Name=self.trail)["IsLogging"])

    def own_writes(self) -> list[dict[str, Any]]:
        identity = own_identity(self.role)
        return [
            # Its restart: StartLogging is in no rule.
            self.cloudtrail_event(
                "StartLogging",
                request_parameters={"name": self.trail},
                user_identity=identity,
                event_source="cloudtrail.amazonaws.com",
            ),
            # The liveness canary's own writes ARE routed back: that is their purpose (noted, then ignored).
            self.cloudtrail_event(
                "PutParameter",
                request_parameters={"name": "/mlwarden/liveness-canary", "type": "String", "overwrite": True},
                user_identity=identity,
                event_source="ssm.amazonaws.com",
            ),
            self.cloudtrail_event(
                "UpdateRole",
                request_parameters={"roleName": "mlwarden-liveness-canary", "description": "canary"},
                user_identity=identity,
                event_source="iam.amazonaws.com",
            ),
        ]


class GuardKmsKeys(Scenario):
    """Rotation turned off on a customer managed key: the handler turns it on (KMS.4)."""

    app = "guard_kms_keys"
    function = "GuardKmsKeysFunction"
    role = "GuardKmsKeysRole"
    write_service = "kms"
    write = "EnableKeyRotation"
    permission = "kms:EnableKeyRotation"
    denied_code = "AccessDeniedException"
    outcome = "remediated"

    def arrange(self) -> None:
        self.key_id = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["KeyId"]

    def event(self) -> dict[str, Any]:
        return self.cloudtrail_event(
            "DisableKeyRotation", request_parameters={"keyId": self.key_id}, event_source="kms.amazonaws.com"
        )

    def throttle(self) -> Throttle:
        return Throttle(
            "kms",
            lambda request: request.headers.get("X-Amz-Target", b"").endswith(b"DescribeKey"),
            400,
            "application/x-amz-json-1.1",
            json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode(),
        )

    def delete(self) -> None:
        # A deleted key answers NotFoundException, as one that never was (moto deletes no key before its date).
        del kms_backends[ACCOUNT]["us-east-1"].keys[self.key_id]

    def acted(self) -> bool:
        status = boto3.client("kms", region_name="us-east-1").get_key_rotation_status(KeyId=self.key_id)
        return bool(status["KeyRotationEnabled"])

    def own_writes(self) -> list[dict[str, Any]]:
        return [
            self.cloudtrail_event(
                "EnableKeyRotation",
                request_parameters={"keyId": self.key_id},
                user_identity=own_identity(self.role),
                event_source="kms.amazonaws.com",
            )
        ]


class GuardS3Data(Scenario):
    """A PII bucket whose policy was deleted: the handler merges the HTTPS-only statement (S3.5)."""

    app = "guard_s3_data"
    function = "GuardS3DataFunction"
    role = "GuardS3DataRole"
    write_service = "s3"
    write = "PutBucketPolicy"
    permission = "s3:PutBucketPolicy"
    outcome = "remediated"
    bucket = "pii-training"

    def arrange(self) -> None:
        self.aws.bucket(self.bucket, tags={"mlwarden:pii": "true"}, block=ALL_ON)
        kms = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/k"}
        self.aws.s3.put_bucket_encryption(
            Bucket=self.bucket,
            ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": kms}]},
        )

    def event(self) -> dict[str, Any]:
        return self.cloudtrail_event("DeleteBucketPolicy", self.bucket)

    def throttle(self) -> Throttle:
        return s3_throttle("?policy")

    def delete(self) -> None:
        self.aws.s3.delete_bucket(Bucket=self.bucket)

    def acted(self) -> bool:
        try:
            policy = json.loads(self.aws.s3.get_bucket_policy(Bucket=self.bucket)["Policy"])
        except self.aws.s3.exceptions.ClientError:
            return False
        return requires_https(policy, f"arn:aws:s3:::{self.bucket}")

    def own_writes(self) -> list[dict[str, Any]]:
        policy = self.aws.s3.get_bucket_policy(Bucket=self.bucket)["Policy"]
        parameters = {"bucketName": self.bucket, "bucketPolicy": json.loads(policy), "policy": [""]}
        return [
            self.cloudtrail_event(
                "PutBucketPolicy", request_parameters=parameters, user_identity=own_identity(self.role)
            )
        ]


SCENARIOS = [
    BlockPublicS3,
    TagPiiBucket,
    FlagWildcardIam,
    CheckSageMakerEncryption,
    WatchInputs,
    GuardKmsKeys,
    GuardS3Data,
]


@pytest.fixture(params=SCENARIOS, ids=[s.app for s in SCENARIOS])
def scenario(request: pytest.FixtureRequest, aws: Any, cloudtrail_event: Any) -> Scenario:
    built: Scenario = request.param(aws, cloudtrail_event)
    return built


@pytest.fixture
def handler_for(scenario: Scenario, make_handler: Callable[..., Any]) -> Callable[..., Any]:
    def make(**env: str | None) -> Any:
        return make_handler(app=scenario.app, remediator_role_arn=scenario.role_arn, env={**scenario.env, **env})

    return make


# Not an event handler: the sweep planner only lists and sends; its faults (a throttled or refused listing, a
# start it cannot read, running out of time) are in tests/sweep/test_deployed_sweep.py.
NOT_EVENT_HANDLERS = ("sweep_planner",)


def test_every_function_in_functions_has_a_scenario() -> None:
    handlers = [p.parent.name for p in (ROOT / "functions").glob("*/app.py") if p.parent.name not in NOT_EVENT_HANDLERS]
    assert sorted(handlers) == sorted(s.app for s in SCENARIOS)


# --- 1. throttling ------------------------------------------------------------------------------------------


def test_a_read_throttled_once_is_retried_by_botocore_and_the_outcome_is_normal(
    scenario: Scenario, handler_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = handler_for()
    scenario.arrange()
    throttle = scenario.throttle()
    throttle.install()
    backoffs: list[float] = []
    monkeypatch.setattr(botocore.endpoint.time, "sleep", backoffs.append)

    result = handler(scenario.event())

    assert len(throttle.throttled) == 1
    assert len(backoffs) == 1  # one backoff, then the retry succeeded
    assert result["outcome"] == scenario.outcome
    assert scenario.acted()
    assert [a.attributes["outcome"] for a in scenario.aws.alerts()] == [scenario.outcome]


# --- 2. AccessDenied on the write ---------------------------------------------------------------------------


def test_access_denied_on_the_write_is_failed_alerted_with_the_permission_and_raised(
    scenario: Scenario, handler_for: Any
) -> None:
    handler = handler_for()
    scenario.arrange()
    denied = deny_calls(clients.client(scenario.write_service), scenario.write, scenario.denied_code)

    with pytest.raises(RemediationFailed) as raised:
        handler(scenario.event())

    assert denied == [scenario.write]
    assert raised.value.outcome.outcome.value == "failed"
    cause = raised.value.__cause__
    assert isinstance(cause, AwsCallFailed)
    assert (cause.action, cause.code) == (scenario.permission, scenario.denied_code)
    assert not scenario.acted()
    alert = scenario.aws.only_alert()
    assert alert.attributes["outcome"] == "failed"
    assert f"permission {scenario.permission} is missing" in alert.line("What")


# --- 3. the resource deleted between the event and the fix ------------------------------------------------


def test_resource_deleted_before_the_fix_is_ignored_with_a_reason_without_alert_or_write(
    scenario: Scenario, handler_for: Any
) -> None:
    handler = handler_for()
    scenario.arrange()
    event = scenario.event()
    scenario.delete()
    writes = count_calls(clients.client(scenario.write_service), scenario.write)

    result = handler(event)

    assert result["outcome"] == "ignored"
    assert "no longer exist" in result["reason"]
    assert writes == []
    assert scenario.aws.alerts() == []


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(BlockPublicS3, id="block_public_s3"),
        pytest.param(TagPiiBucket, id="tag_pii_bucket"),
        pytest.param(FlagWildcardIam, id="flag_wildcard_iam"),
        pytest.param(WatchInputs, id="watch_inputs"),
        pytest.param(GuardKmsKeys, id="guard_kms_keys"),
        pytest.param(GuardS3Data, id="guard_s3_data"),
        # check_sagemaker_encryption: not applicable, SageMaker has no DeleteTrainingJob (a job cannot vanish
        # between its Describe and its Stop).
    ],
)
def test_resource_deleted_just_before_the_write_is_ignored_without_alert_or_raise(
    kind: type[Scenario], aws: Any, cloudtrail_event: Any, make_handler: Callable[..., Any]
) -> None:
    scenario = kind(aws, cloudtrail_event)
    handler = make_handler(app=scenario.app, remediator_role_arn=scenario.role_arn, env=dict(scenario.env))
    scenario.arrange()
    writes = count_calls(clients.client(scenario.write_service), scenario.write)
    # The race: every read found the resource, then it is deleted as the write goes out.
    clients.client(scenario.write_service).meta.events.register(
        f"before-call.{scenario.write_service}.{scenario.write}", lambda **_: scenario.delete()
    )

    result = handler(scenario.event())

    assert writes == [scenario.write]
    assert result["outcome"] == "ignored"
    assert "no longer exist" in result["reason"]
    assert aws.alerts() == []


# --- 4. SNS down after the action (guarantee 3) -------------------------------------------------------------


def test_sns_down_after_the_action_raises_keeps_the_action_and_the_retry_sends_only_the_alert(
    scenario: Scenario, handler_for: Any
) -> None:
    handler = handler_for()
    scenario.arrange()
    event = scenario.event()
    writes = count_calls(clients.client(scenario.write_service), scenario.write)
    fail_next_publish()

    with pytest.raises(AlertDeliveryFailed) as raised:
        handler(event)
    assert raised.value.outcome.outcome.value == scenario.outcome
    assert scenario.acted()
    assert scenario.aws.alerts() == []

    retried = handler(event)  # Lambda's retry of the same event, SNS back

    assert writes == [scenario.write]
    assert (retried["outcome"], retried["redelivered"], retried["alerted"]) == (scenario.outcome, True, True)
    assert [a.attributes["outcome"] for a in scenario.aws.alerts()] == [scenario.outcome]


# --- 5. DynamoDB unavailable: security beats dedup ---------------------------------------------------------


def test_without_the_outcome_table_the_action_still_happens_and_is_alerted(
    scenario: Scenario, handler_for: Any
) -> None:
    handler = handler_for(OUTCOME_TABLE="table-that-does-not-exist")
    scenario.arrange()
    writes = count_calls(clients.client(scenario.write_service), scenario.write)

    result = handler(scenario.event())

    assert result["outcome"] == scenario.outcome
    assert writes == [scenario.write]
    assert scenario.acted()
    assert [a.attributes["outcome"] for a in scenario.aws.alerts()] == [scenario.outcome]


# --- 6. the loop guard against the handler's own writes ----------------------------------------------------


def test_own_writes_are_either_not_routed_back_or_ignored_by_the_loop_guard(
    scenario: Scenario, handler_for: Any
) -> None:
    handler = handler_for()
    scenario.arrange()
    handler(scenario.event())  # the genuine event: the handler acts, and CloudTrail records its own write
    alerted = len(scenario.aws.alerts())
    writes = count_calls(clients.client(scenario.write_service), scenario.write)
    routed_back = 0
    for event in scenario.own_writes():
        if scenario.function not in {f.logical_id for f in TEMPLATE.route(event)}:
            continue  # no rule of this function matches its own write: nothing to guard
        routed_back += 1
        result = handler(event)
        # Decided on live state: the resource is as the handler left it (loop guard), or the check has nothing
        # to look at (the revert's policy is not in this account).
        assert result["outcome"] == "ignored"
        assert result["reason"] in (
            LOOP_GUARD,
            "the policy or its principal no longer exists (iam:GetPolicy)",
            "TagRole does not set the exempt tag mlwarden:exempt",  # tagging calls are routed for the exempt tag
        )
    assert writes == []
    assert len(scenario.aws.alerts()) == alerted
    # Which own writes come back is a property of template.yaml; pinned so a rule change is noticed.
    assert routed_back == ROUTED_BACK[scenario.app]


# block_public_s3: PutBucketPublicAccessBlock is in its own rule. flag_wildcard_iam: TagRole (routed for the
# exempt tag) and the optional revert's SetDefaultPolicyVersion are. tag_pii_bucket: its PutBucketTagging and its
# lock go to block_public_s3's rule, not its own. check_sagemaker_encryption: StopTrainingJob is in no rule, and
# the Stopping state change is filtered out (only InProgress is routed).
# watch_inputs: its StartLogging is in no rule; the liveness canary's PutParameter and UpdateRole are, by design.
ROUTED_BACK = {
    "block_public_s3": 1,
    "tag_pii_bucket": 0,
    "flag_wildcard_iam": 2,
    "check_sagemaker_encryption": 0,
    "watch_inputs": 2,
    # guard_kms_keys: EnableKeyRotation, CancelKeyDeletion and EnableKey are in no rule. guard_s3_data: its
    # PutBucketPolicy is in its own rule (and block_public_s3's).
    "guard_kms_keys": 0,
    "guard_s3_data": 1,
}
