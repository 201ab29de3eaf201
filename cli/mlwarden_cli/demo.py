"""`make demo`: ML Warden against a small vulnerable ML account in a local AWS emulator.

Starts moto server, creates the account (buckets made public in different ways,
an exempt bucket, a private one; a role with a wildcard inline policy, a tight one, a policy whose
new default version grants admin), replays the matching real-shaped events from
events/ through the template's routing and the handlers, prints what was found,
changed and alerted (the SNS alerts as an SQS subscriber receives them), verifies
the final state and exits 0 only if everything is as expected.

Some bad resources predate ML Warden: no event will ever name them. `mlwarden sweep` finds them (dry-run),
fixes in enforce mode what the event path would fix, and a second sweep sends nothing new.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlwarden_cli import demo_org, exempt
from mlwarden_cli.emulator import FAKE_CREDENTIALS, EmulatorError, moto_server
from mlwarden_cli.local import create_local_resources
from mlwarden_cli.replay import Replayed, Replayer, format_table, read_events
from mlwarden_cli.template import DEFAULT_ACCOUNT, Template

ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
PII_BUCKET_TAGS = {"team": "ml-research", "cost-center": "ml-1234", "mlwarden:pii": "true"}
SHARED_DATASETS_TAGS = {"team": "analytics"}


@dataclass(frozen=True)
class Step:
    file: str
    expect_function: str | None
    expect_outcome: str
    story: str
    # Other functions the event also reaches, and the outcome each must decide.
    also: tuple[tuple[str, str], ...] = ()

    def expected(self, function: str | None) -> tuple[str | None, str]:
        """The function and outcome a result of `function` is checked against."""
        for other, outcome in self.also:
            if function == other:
                return other, outcome
        return self.expect_function, self.expect_outcome


SCENARIO = (
    Step(
        "s3/put-bucket-acl-public.json",
        "BlockPublicS3Function",
        "remediated",
        "a data scientist opens the PII training-data bucket with a public-read ACL",
    ),
    Step(
        "s3/put-bucket-policy-public.json",
        "BlockPublicS3Function",
        "remediated",
        "a pipeline role attaches a public bucket policy (guard_s3_data: it lets anyone in, S3.6)",
        also=(("GuardS3DataFunction", "flagged"),),
    ),
    Step(
        "s3/delete-bucket-public-access-block.json",
        "BlockPublicS3Function",
        "remediated",
        "someone deletes the feature store's public-access block",
    ),
    Step(
        "s3/put-bucket-acl-exempt-bucket.json",
        "BlockPublicS3Function",
        "exempt",
        "the public website bucket (exempt in the registry) gets a public ACL: left as is, LOW",
    ),
    Step(
        "s3/create-bucket.json",
        "BlockPublicS3Function",
        "compliant",
        "a private model-artifacts bucket is created with its block on (guard_s3_data: SSE-S3, not KMS: S3.17)",
        also=(("GuardS3DataFunction", "flagged"),),
    ),
    Step(
        "s3/delete-bucket-policy.json",
        "GuardS3DataFunction",
        "remediated",
        "someone deletes the PII patient-records bucket's policy: made HTTPS-only again (S3.5)",
    ),
    Step(
        "s3/put-bucket-public-access-block-by-mlwarden.json",
        "BlockPublicS3Function",
        "ignored",
        "CloudTrail reports ML Warden's own fix (loop guard)",
    ),
    Step(
        "s3/put-bucket-acl-public.json",
        "BlockPublicS3Function",
        "remediated",
        "the first event is delivered again (at-least-once delivery): its stored outcome, nothing re-done",
    ),
    Step(
        "config/s3-bucket-public-read-prohibited-noncompliant.json",
        "BlockPublicS3Function",
        "compliant",
        "AWS Config's periodic evaluation catches up with the fixed bucket",
    ),
    Step(
        "macie/policy-s3-bucket-public.json",
        "BlockPublicS3Function",
        "compliant",
        "Macie's policy finding for the (already fixed) policy bucket",
    ),
    Step(
        "s3/put-bucket-tagging-exempt.json",
        "BlockPublicS3Function",
        "flagged",
        "a data scientist tags the training-data bucket mlwarden:exempt=true: refused and alerted",
    ),
    Step(
        "s3/put-bucket-policy-failed.json",
        None,
        "unrouted",
        "a PutBucketPolicy that AWS denied (the rule filters failed calls)",
    ),
    Step("unrelated/ec2-run-instances.json", None, "unrouted", "an unrelated EC2 call"),
    Step(
        "macie/sensitive-data-personal.json",
        "TagPiiBucketFunction",
        "remediated",
        "Macie finds customer PII in the training-data bucket: tagged, the team's own tags kept",
    ),
    Step(
        "macie/sensitive-data-multiple.json",
        "TagPiiBucketFunction",
        "remediated",
        "a later Macie finding adds card numbers: the bucket's PII types grow",
    ),
    Step(
        "macie/sensitive-data-custom-identifier.json",
        "TagPiiBucketFunction",
        "remediated",
        "a Medium custom-identifier finding: its type is added, the severity stays High",
    ),
    Step(
        "macie/sensitive-data-personal-republished.json",
        "TagPiiBucketFunction",
        "compliant",
        "Macie publishes the first finding again a week later: only its last-seen tag moves, no second alert",
    ),
    Step(
        "macie/sensitive-data-financial.json",
        "TagPiiBucketFunction",
        "remediated",
        "card numbers in the public shared-datasets bucket: CRITICAL, tagged and locked",
    ),
    Step(
        "macie/sensitive-data-credentials.json",
        "TagPiiBucketFunction",
        "exempt",
        "credentials in the exempt public website bucket: tagged, not locked, still CRITICAL",
    ),
    Step(
        "s3/delete-account-public-access-block.json",
        "BlockPublicS3Function",
        "remediated",
        "the account-level block is deleted: restored, an exempt bucket does not hold it back",
    ),
    Step(
        "sagemaker/create-training-job-unencrypted.json",
        "CheckSageMakerEncryptionFunction",
        "flagged",
        "a data scientist trains on the patient-records bucket (PII) without KMS keys, outside a VPC",
    ),
    Step(
        "sagemaker/create-training-job-encrypted.json",
        "CheckSageMakerEncryptionFunction",
        "compliant",
        "the same training with KMS keys, in a VPC, network-isolated",
    ),
    Step(
        "sagemaker/create-training-job-failed.json",
        None,
        "unrouted",
        "a CreateTrainingJob that AWS denied (the rule filters failed calls)",
    ),
    Step(
        "sagemaker/create-model-no-network-isolation.json",
        "CheckSageMakerEncryptionFunction",
        "flagged",
        "a model in a VPC without network isolation, its image not from a private registry: SageMaker.5, .16",
    ),
    Step(
        "sagemaker/create-data-quality-job-definition-unencrypted.json",
        "CheckSageMakerEncryptionFunction",
        "flagged",
        "a data-quality monitoring job on two instances, unencrypted and not isolated: SageMaker.9, .11",
    ),
    Step(
        "iam/put-role-policy-s3-wildcard.json",
        "FlagWildcardIamFunction",
        "flagged",
        "a data scientist gives their role s3:* on * inline (HIGH: the role is tagged)",
    ),
    Step(
        "iam/put-role-policy-tight.json",
        "FlagWildcardIamFunction",
        "compliant",
        "the training role gets a tight, bucket-scoped policy (not flagged)",
    ),
    Step(
        "iam/create-policy-version-admin.json",
        "FlagWildcardIamFunction",
        "flagged",
        "a new default version of the training policy grants * on * (CRITICAL: the policy is tagged)",
    ),
    Step(
        "cloudtrail/stop-logging.json",
        "WatchInputsFunction",
        "remediated",
        "someone stops the trail that feeds ML Warden: it logs again, CRITICAL with the actor",
    ),
)
TRAIL_NAME = "mlw-management-events"
TRAIL_BUCKET = "mlw-trail-logs"
SAGEMAKER_ROLE = "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole-MLW"
SAGEMAKER_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
UNENCRYPTED_JOB = "mlw-churn-xgb-unencrypted"
DEMO_MODEL = "mlw-churn-model"
DEMO_MONITORING = "mlw-churn-data-quality"
MONITOR_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-model-monitor-analyzer"
ENCRYPTED_JOB = "mlw-churn-xgb-encrypted"
IAM_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
WILDCARD_TAG = "mlwarden:wildcard"
WEBSITE_ARN = "arn:aws:s3:::mlw-public-website"
WEBSITE_REASON = "public model cards, SEC-1234"


def _heading(text: str) -> None:
    print(f"\n== {text} " + "=" * max(0, 76 - len(text)))


def _create_account(clients: Callable[[str], Any], template: Template, endpoint: str) -> dict[str, Any]:
    """The account's state; `exports` are the variables `mlwarden local init` prints for the template's
    tables and topic, which it creates."""
    s3, sns, sqs = clients("s3"), clients("sns"), clients("sqs")
    exports = create_local_resources(template, endpoint)
    topic_arn = exports["ALERT_TOPIC_ARN"]
    queue_url = sqs.create_queue(QueueName="security-team-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)

    def bucket(name: str, tags: dict[str, str] | None = None) -> None:
        s3.create_bucket(Bucket=name)
        if tags:
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})

    bucket("mlw-training-data-acl", PII_BUCKET_TAGS)
    s3.put_bucket_acl(Bucket="mlw-training-data-acl", ACL="public-read")

    bucket("mlw-training-data-policy", {"team": "ml-platform"})
    public_read = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::mlw-training-data-policy/*",
            }
        ],
    }
    s3.put_bucket_policy(Bucket="mlw-training-data-policy", Policy=json.dumps(public_read))

    bucket("mlw-feature-store")
    s3.put_public_access_block(Bucket="mlw-feature-store", PublicAccessBlockConfiguration=ALL_ON)
    s3.delete_public_access_block(Bucket="mlw-feature-store")

    bucket("mlw-public-website", {"purpose": "public model cards"})
    s3.put_bucket_acl(Bucket="mlw-public-website", ACL="public-read")

    bucket("mlw-model-artifacts", {"team": "ml-platform"})
    s3.put_public_access_block(Bucket="mlw-model-artifacts", PublicAccessBlockConfiguration=ALL_ON)

    bucket("mlw-shared-datasets", SHARED_DATASETS_TAGS)
    s3.put_bucket_acl(Bucket="mlw-shared-datasets", ACL="public-read")
    bucket("mlw-patient-records", PII_BUCKET_TAGS)
    s3.put_public_access_block(Bucket="mlw-patient-records", PublicAccessBlockConfiguration=ALL_ON)
    # The trail that feeds ML Warden, logging, then stopped by someone (cloudtrail/stop-logging.json).
    bucket(TRAIL_BUCKET)
    cloudtrail = clients("cloudtrail")
    cloudtrail.create_trail(Name=TRAIL_NAME, S3BucketName=TRAIL_BUCKET, IsMultiRegionTrail=True)
    cloudtrail.start_logging(Name=TRAIL_NAME)
    cloudtrail.stop_logging(Name=TRAIL_NAME)
    _training_job(clients("sagemaker"), UNENCRYPTED_JOB, encrypted=False)
    _training_job(clients("sagemaker"), ENCRYPTED_JOB, encrypted=True)
    _model_and_monitoring(clients("sagemaker"))
    return {
        "exports": exports,
        "topic_arn": topic_arn,
        "queue_url": queue_url,
        "training_policy_arn": _create_iam(clients("iam")),
    }


def _event_document(events_dir: Path, file: str) -> str:
    event = json.loads((events_dir / file).read_text(encoding="utf-8"))
    return str(event["detail"]["requestParameters"]["policyDocument"])


def _create_iam(iam: Any) -> str:
    """The roles and the policy the IAM sample events name, in the state those events leave them."""
    events_dir = Path(__file__).resolve().parents[2] / "events"
    trust = json.dumps(IAM_TRUST)
    iam.create_role(
        RoleName="mlw-data-scientist", AssumeRolePolicyDocument=trust, Tags=[{"Key": "team", "Value": "ds"}]
    )
    iam.put_role_policy(
        RoleName="mlw-data-scientist",
        PolicyName="s3-everything",
        PolicyDocument=_event_document(events_dir, "iam/put-role-policy-s3-wildcard.json"),
    )
    iam.create_role(RoleName="mlw-training", AssumeRolePolicyDocument=trust)
    iam.put_role_policy(
        RoleName="mlw-training",
        PolicyName="read-training-data",
        PolicyDocument=_event_document(events_dir, "iam/put-role-policy-tight.json"),
    )
    scoped = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::mlw-training-data/*"}],
    }
    arn: str = iam.create_policy(PolicyName="mlw-training", PolicyDocument=json.dumps(scoped))["Policy"]["Arn"]
    iam.create_policy_version(
        PolicyArn=arn,
        PolicyDocument=_event_document(events_dir, "iam/create-policy-version-admin.json"),
        SetAsDefault=True,
    )
    return arn


def _training_job(sagemaker: Any, name: str, *, encrypted: bool) -> None:
    """The jobs the CreateTrainingJob samples report, as SageMaker would describe them."""
    resources: dict[str, Any] = {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    output: dict[str, Any] = {"S3OutputPath": "s3://mlw-model-artifacts/churn/"}
    secure: dict[str, Any] = {}
    if encrypted:
        resources["VolumeKmsKeyId"] = output["KmsKeyId"] = SAGEMAKER_KEY
        secure = {
            "VpcConfig": {"SecurityGroupIds": ["sg-0a1b2c3d4e5f60718"], "Subnets": ["subnet-0a1b2c3d4e5f60718"]},
            "EnableNetworkIsolation": True,
            "EnableInterContainerTrafficEncryption": True,
        }
    sagemaker.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "xgboost:1.7-1", "TrainingInputMode": "File"},
        RoleArn=SAGEMAKER_ROLE,
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://mlw-patient-records/churn/train/"}
                },
            }
        ],
        OutputDataConfig=output,
        ResourceConfig=resources,
        StoppingCondition={"MaxRuntimeInSeconds": 86400},
        **secure,
    )


def _model_and_monitoring(sagemaker: Any) -> None:
    """The model, monitoring job definition and feature group the CreateModel, CreateDataQualityJobDefinition
    and *FeatureGroup samples report, as SageMaker would describe them."""
    events_dir = Path(__file__).resolve().parents[2] / "events"
    model = json.loads((events_dir / "sagemaker/create-model-no-network-isolation.json").read_text())
    container = model["detail"]["requestParameters"]["primaryContainer"]
    sagemaker.create_model(
        ModelName=DEMO_MODEL,
        PrimaryContainer={"Image": container["image"], "ModelDataUrl": container["modelDataUrl"]},
        ExecutionRoleArn=SAGEMAKER_ROLE,
        VpcConfig={"SecurityGroupIds": ["sg-0a1b2c3d4e5f60718"], "Subnets": ["subnet-0a1b2c3d4e5f60718"]},
        EnableNetworkIsolation=False,
    )
    sagemaker.create_data_quality_job_definition(
        JobDefinitionName=DEMO_MONITORING,
        DataQualityAppSpecification={"ImageUri": MONITOR_IMAGE},
        DataQualityJobInput={
            "EndpointInput": {"EndpointName": "mlw-churn-endpoint", "LocalPath": "/opt/ml/processing/input/endpoint"}
        },
        DataQualityJobOutputConfig={
            "MonitoringOutputs": [
                {
                    "S3Output": {
                        "S3Uri": f"s3://mlw-model-artifacts/monitoring/{DEMO_MONITORING}",
                        "LocalPath": "/opt/ml/processing/output",
                    }
                }
            ],
            "KmsKeyId": SAGEMAKER_KEY,
        },
        JobResources={
            "ClusterConfig": {
                "InstanceCount": 2,
                "InstanceType": "ml.m5.xlarge",
                "VolumeSizeInGB": 20,
                "VolumeKmsKeyId": SAGEMAKER_KEY,
            }
        },
        NetworkConfig={"EnableInterContainerTrafficEncryption": False, "EnableNetworkIsolation": False},
        RoleArn=SAGEMAKER_ROLE,
        StoppingCondition={"MaxRuntimeInSeconds": 1800},
    )
    # The feature group of the CreateFeatureGroup/UpdateFeatureGroup samples (moto keeps no online store).
    sagemaker.create_feature_group(
        FeatureGroupName="mlw_customer_features",
        RecordIdentifierFeatureName="customer_id",
        EventTimeFeatureName="event_time",
        FeatureDefinitions=[
            {"FeatureName": "customer_id", "FeatureType": "String"},
            {"FeatureName": "event_time", "FeatureType": "String"},
        ],
        OfflineStoreConfig={"S3StorageConfig": {"S3Uri": "s3://mlw-feature-store/offline"}},
        RoleArn=SAGEMAKER_ROLE,
    )


def _received_alerts(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            return alerts
        for message in messages:
            alerts.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def _block_of(s3: Any, bucket: str) -> dict[str, bool] | None:
    try:
        return dict(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"])
    except s3.exceptions.ClientError as err:
        if err.response["Error"]["Code"] == "NoSuchPublicAccessBlockConfiguration":
            return None
        raise


def _tags_of(s3: Any, bucket: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}


def _pii_tag_checks(s3: Any) -> list[tuple[str, bool]]:
    training = _tags_of(s3, "mlw-training-data-acl")
    shared = _tags_of(s3, "mlw-shared-datasets")
    website = _tags_of(s3, "mlw-public-website")
    for bucket, tags in (("mlw-training-data-acl", training), ("mlw-shared-datasets", shared)):
        print(
            f"{bucket:<26} PII tags: " + ", ".join(f"{k}={v}" for k, v in tags.items() if k.startswith("mlwarden:pii"))
        )
    types = training.get("mlwarden:pii-types", "").split()
    return [
        (
            "foreign tags on mlw-training-data-acl survive the PII tags",
            all(training.get(k) == v for k, v in PII_BUCKET_TAGS.items()),
        ),
        (
            "mlw-training-data-acl severity stays High after a Medium finding",
            training.get("mlwarden:pii-severity") == "High",
        ),
        (
            "mlw-training-data-acl PII types merge all three findings",
            {"USA_SOCIAL_SECURITY_NUMBER", "CREDIT_CARD_NUMBER", "custom:email_check"} <= set(types),
        ),
        (
            "mlw-shared-datasets is tagged and keeps its own tags",
            shared.get("mlwarden:pii") == "true" and shared.get("team") == SHARED_DATASETS_TAGS["team"],
        ),
        (
            "exempt mlw-public-website is tagged (classification) but not locked",
            website.get("mlwarden:pii") == "true" and website.get("purpose") == "public model cards",
        ),
    ]


def _sagemaker_checks(alerts: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    def about(job: str) -> list[dict[str, Any]]:
        return [a for a in alerts if str(a.get("Subject", "")).endswith(f"training-job/{job}")]

    unencrypted = about(UNENCRYPTED_JOB)
    body = unencrypted[0].get("Message", "") if len(unencrypted) == 1 else ""
    severity = unencrypted[0].get("MessageAttributes", {}).get("severity", {}).get("Value") if unencrypted else None
    return [
        (f"one alert for {UNENCRYPTED_JOB}, listing every failed rule", len(unencrypted) == 1),
        (f"{UNENCRYPTED_JOB} on PII data is HIGH", severity == "HIGH"),
        (
            "the alert names the missing keys (ResourceConfig.VolumeKmsKeyId, OutputDataConfig.KmsKeyId)",
            "ResourceConfig.VolumeKmsKeyId" in body and "OutputDataConfig.KmsKeyId" in body,
        ),
        (f"the compliant {ENCRYPTED_JOB} stays quiet", about(ENCRYPTED_JOB) == []),
        (
            f"the alert about {DEMO_MODEL} carries controls SageMaker.5 and .16 (SNS attribute)",
            _controls_of(alerts, f"model/{DEMO_MODEL}") == ["SageMaker.5", "SageMaker.16"],
        ),
        (
            f"the alert about {DEMO_MONITORING} carries controls SageMaker.9 and .11",
            _controls_of(alerts, f"data-quality-job-definition/{DEMO_MONITORING}") == ["SageMaker.9", "SageMaker.11"],
        ),
    ]


def _controls_of(alerts: list[dict[str, Any]], resource: str) -> list[str] | None:
    """The `controls` message attribute of the one alert about the resource (a JSON list, String.Array)."""
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:{resource}"
    found = [a for a in alerts if f'"resource": "{arn}"' in str(a.get("Message", ""))]
    if len(found) != 1:
        return None
    value = found[0].get("MessageAttributes", {}).get("controls", {}).get("Value")
    return list(json.loads(value)) if isinstance(value, str) else None


def run_demo(template: Template) -> int:
    events_dir = template.path.parent / "events"
    try:
        with moto_server() as endpoint:
            os.environ.update(FAKE_CREDENTIALS)
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            # The report shows every outcome; the handlers' INFO logs would repeat it.
            os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
            return _run(template, events_dir, endpoint)
    except EmulatorError as err:
        print(f"mlwarden demo: {err}")
        return 2


def _run(template: Template, events_dir: Any, endpoint: str) -> int:  # noqa: PLR0915 - one linear story
    from mlwarden import clients  # noqa: PLC0415 - after AWS_ENDPOINT_URL points at the emulator

    _heading(f"Before ML Warden is deployed, in moto server at {endpoint}")
    _seed_before_deployment(clients.client("s3"))
    _heading("A small vulnerable ML account")
    account = _create_account(clients.client, template, endpoint)
    os.environ.update(account["exports"])
    print("buckets: mlw-training-data-acl (PII, public ACL), mlw-training-data-policy (public policy),")
    print("         mlw-feature-store (block deleted), mlw-public-website (public ACL, on purpose),")
    print("         mlw-model-artifacts (private), mlw-shared-datasets (public ACL, Macie finds card")
    print("         numbers in it later). Trail mlw-management-events was stopped. Alerts go to the")
    print("         template's alert topic,")
    print("         subscribed by SQS queue security-team-inbox.")
    print(
        f"training jobs: {UNENCRYPTED_JOB} (no KMS keys, no VPC, reads mlw-patient-records: PII),\n"
        f"         {ENCRYPTED_JOB} (KMS keys, VPC, network isolation)."
    )

    _heading("The security team exempts the website bucket through the registry")
    until = (datetime.now(UTC).date() + timedelta(days=60)).isoformat()
    print(f"$ mlwarden exempt add {WEBSITE_ARN} --until {until} --reason '{WEBSITE_REASON}'")
    grant = argparse.Namespace(
        exempt_command="add", resource_arn=WEBSITE_ARN, until=until, reason=WEBSITE_REASON, check="all"
    )
    granted = exempt.run(grant) == 0
    checks_before = [("the registry exemption is granted (exit 0) and alerted", granted)]

    _heading("Events replayed through the template's EventBridge rules")
    replayer = Replayer(template)
    results: list[Replayed] = []
    checks: list[tuple[str, bool]] = list(checks_before)
    for number, step in enumerate(SCENARIO, start=1):
        print(f"{number:>2}. {step.story}")
        for event in read_events(events_dir / step.file):
            for result in replayer.replay(event, step.file):
                results.append(result)
                function, outcome = step.expected(result.function)
                ok = result.function == function and result.outcome == outcome
                checks.append((f"{step.file} -> {function or 'no function'}: {outcome}", ok))
    results += _key_scheduled_for_deletion(replayer, clients.client, events_dir, checks)
    print()
    print(format_table(results))

    s3, sqs = clients.client("s3"), clients.client("sqs")
    alerts = _received_alerts(sqs, account["queue_url"])
    _heading(f"Alerts received by the security team's SQS subscription ({len(alerts)})")
    for alert in alerts:
        attributes = {name: value["Value"] for name, value in alert.get("MessageAttributes", {}).items()}
        print(f"\nSubject: {alert.get('Subject')}")
        print("Attributes: " + ", ".join(f"{k}={v}" for k, v in sorted(attributes.items())))
        body = alert.get("Message", "").split("\nOutcome (JSON):", 1)[0].rstrip()
        print("\n".join("  " + line for line in body.splitlines()))

    checks += _flapping_bucket(replayer, clients.client, events_dir, account["queue_url"])

    _heading("Final state")
    expected_blocks = {
        "mlw-training-data-acl": ALL_ON,
        "mlw-training-data-policy": ALL_ON,
        "mlw-feature-store": ALL_ON,
        "mlw-public-website": None,
        "mlw-model-artifacts": ALL_ON,
        "mlw-shared-datasets": ALL_ON,
    }
    for bucket, expected in expected_blocks.items():
        actual = _block_of(s3, bucket)
        shown = "all four on" if actual == ALL_ON else ("no block" if actual is None else str(actual))
        print(f"{bucket:<26} public-access block: {shown}")
        checks.append((f"{bucket} block is {'all on' if expected else 'untouched (exempt)'}", actual == expected))
    checks += _pii_tag_checks(s3)
    checks += _https_only_checks(s3)
    try:
        clients.client("s3control").get_public_access_block(AccountId=DEFAULT_ACCOUNT)
        account_block_untouched = False
    except clients.client("s3control").exceptions.NoSuchPublicAccessBlockConfiguration:
        account_block_untouched = True
    print(f"{'account ' + DEFAULT_ACCOUNT:<26} public-access block: {'none' if account_block_untouched else 'set'}")
    checks.append(("account block restored although an exempt bucket exists", not account_block_untouched))
    checks += _exemption_checks(alerts)
    checks += _sagemaker_checks(alerts)
    checks += _iam_final_state(clients.client("iam"), account["training_policy_arn"])
    logging = bool(clients.client("cloudtrail").get_trail_status(Name=TRAIL_NAME)["IsLogging"])
    print(f"{'trail ' + TRAIL_NAME:<26} {'logging' if logging else 'NOT LOGGING'}")
    checks.append(("the stopped trail logs again (GetTrailStatus IsLogging true)", logging))
    alerting = [r for r in results if r.outcome not in ("compliant", "ignored", "unrouted") and not r.redelivered]
    expected_alerts = len(alerting) + 1  # and the registry change
    checks.append((f"one alert per outcome that needs a human ({expected_alerts})", len(alerts) == expected_alerts))
    checks.append(
        (
            "every alert carries severity/check/outcome/account/region attributes",
            all(
                {"severity", "check", "outcome", "account", "region"} <= set(a.get("MessageAttributes", {}))
                for a in alerts
            ),
        )
    )
    checks.append(("the redelivered event was not acted on again", any(r.redelivered for r in results)))
    checks.append(("no handler raised", not any(r.raised for r in results)))
    checks += _sweep_story(template, clients.client, account["queue_url"])

    _heading("Organization mode: the hub acts in member accounts through their member role")
    checks += demo_org.run(replayer, events_dir, account["queue_url"])

    _heading("Checks")
    for description, ok in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {description}")
    failed = [description for description, ok in checks if not ok]
    print(f"\n{len(checks) - len(failed)}/{len(checks)} checks passed")
    return 0 if not failed else 1


DEMO_KEY_FILE = "kms/schedule-key-deletion.json"


def _key_scheduled_for_deletion(
    replayer: Replayer, client: Callable[[str], Any], events_dir: Path, checks: list[tuple[str, bool]]
) -> list[Replayed]:
    """The key that encrypts the patient-records bucket is scheduled for deletion: cancelled and enabled again.

    moto makes up key ids, so the sample event is aimed at the key created here.
    """
    kms, s3 = client("kms"), client("s3")
    key_id = kms.create_key(Description="mlw patient records", Tags=[{"TagKey": "team", "TagValue": "ml-research"}])[
        "KeyMetadata"
    ]["KeyId"]
    kms.enable_key_rotation(KeyId=key_id)
    s3.put_bucket_encryption(
        Bucket="mlw-patient-records",
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_id}}]
        },
    )
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    print(f"{len(SCENARIO) + 1:>2}. someone schedules the key that encrypts the patient-records bucket for deletion")
    event = json.loads((events_dir / DEMO_KEY_FILE).read_text())
    detail = event["detail"]
    old_key = detail["requestParameters"]["keyId"]
    event = json.loads(json.dumps(event).replace(old_key, key_id))
    results = replayer.replay(event, DEMO_KEY_FILE)
    state = kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]
    checks.append(
        (
            f"{DEMO_KEY_FILE} -> GuardKmsKeysFunction: remediated (deletion cancelled, key {state})",
            [r.outcome for r in results] == ["remediated"] and state == "Enabled",
        )
    )
    return results


def _https_only_checks(s3: Any) -> list[tuple[str, bool]]:
    from mlwarden.rules.bucket_policy import requires_https  # noqa: PLC0415 - the package, once the emulator is set

    policy = json.loads(s3.get_bucket_policy(Bucket="mlw-patient-records")["Policy"])
    https_only = requires_https(policy, "arn:aws:s3:::mlw-patient-records")
    print(f"{'mlw-patient-records':<26} bucket policy: {'HTTPS only' if https_only else 'plain HTTP allowed'}")
    return [("mlw-patient-records (PII) accepts HTTPS requests only", https_only)]


FLAPPING_BUCKET = "mlw-flapping-scratch"
FLAPPING_REOPENINGS = 6


def _flapping_bucket(
    replayer: Replayer, client: Callable[[str], Any], events_dir: Path, queue_url: str
) -> list[tuple[str, bool]]:
    """Someone keeps re-opening a bucket: every re-opening is fixed, and the team hears it once as flapping."""
    _heading(f"A flapping bucket: {FLAPPING_BUCKET} re-opened {FLAPPING_REOPENINGS} times in a row")
    s3 = client("s3")
    s3.create_bucket(Bucket=FLAPPING_BUCKET)
    template = json.loads((events_dir / "s3/put-bucket-acl-public.json").read_text(encoding="utf-8"))
    outcomes = []
    for attempt in range(1, FLAPPING_REOPENINGS + 1):
        if _block_of(s3, FLAPPING_BUCKET) is not None:
            s3.delete_public_access_block(Bucket=FLAPPING_BUCKET)
        s3.put_bucket_acl(Bucket=FLAPPING_BUCKET, ACL="public-read")
        event = json.loads(json.dumps(template).replace("mlw-training-data-acl", FLAPPING_BUCKET))
        event["id"] = f"{template['id'][:-4]}{attempt:04d}"
        for result in replayer.replay(event, f"re-opening {attempt}"):
            outcomes.append(result)
            print(f"re-opening {attempt}: {result.outcome} {result.severity}, alerted: {result.alerted}")
    alerts = [
        a
        for a in _received_alerts(client("sqs"), queue_url)
        if FLAPPING_BUCKET in a.get("Subject", "") or FLAPPING_BUCKET in a.get("Message", "")[:2000]
    ]
    flapping = [a for a in alerts if a.get("MessageAttributes", {}).get("flapping", {}).get("Value") == "true"]
    for alert in flapping:
        print(f"\nSubject: {alert.get('Subject')}")
        print("  " + alert.get("Message", "").splitlines()[2])
    locked = _block_of(s3, FLAPPING_BUCKET) == ALL_ON
    print(f"\n{FLAPPING_BUCKET}: {'locked' if locked else 'OPEN'}; {len(alerts)} alerts, {len(flapping)} flapping")
    return [
        (f"every re-opening of {FLAPPING_BUCKET} was fixed", [r.outcome for r in outcomes] == ["remediated"] * 6),
        (f"{FLAPPING_BUCKET} stays locked while it flaps", locked),
        ("one flapping alert (SNS attribute flapping=true), not one alert per re-opening", len(flapping) == 1),
        (f"{FLAPPING_BUCKET} alerted 3 times before flapping, then once as flapping", len(alerts) == 4),
    ]


def _outcome_of(alert: dict[str, Any]) -> dict[str, Any]:
    body = str(alert.get("Message", ""))
    marker = "\nOutcome (JSON):\n"
    return dict(json.loads(body.split(marker, 1)[1])) if marker in body else {}


def _exemption_checks(alerts: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    outcomes = [_outcome_of(a) for a in alerts]
    granted = [o for o in outcomes if o.get("check") == exempt.CHECK and o.get("resource") == WEBSITE_ARN]
    refused = [o for o in outcomes if o.get("details", {}).get("exempt_tag_set", {}).get("counts") is False]
    website_pii = [
        o
        for o in outcomes
        if o.get("check") == "tag_pii_bucket" and o.get("resource") == WEBSITE_ARN and o.get("outcome") == "exempt"
    ]
    return [
        (
            "the registry grant is alerted, naming who granted it",
            len(granted) == 1 and bool(granted[0]["trigger"]["actor"]),
        ),
        ("the self-service exempt tag is refused and alerted", len(refused) == 1),
        (
            "the exempt public website holding credentials is still CRITICAL, naming its exemption",
            len(website_pii) == 1
            and website_pii[0]["severity"] == "CRITICAL"
            and "registry exemption" in website_pii[0]["reason"],
        ),
    ]


def _iam_final_state(iam: Any, training_policy_arn: str) -> list[tuple[str, bool]]:
    def tags(response: dict[str, Any]) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in response["Tags"]}

    scientist = tags(iam.list_role_tags(RoleName="mlw-data-scientist"))
    training = tags(iam.list_role_tags(RoleName="mlw-training"))
    policy = tags(iam.list_policy_tags(PolicyArn=training_policy_arn))
    for name, found in (("role mlw-data-scientist", scientist), ("role mlw-training", training)):
        print(f"{name:<26} {WILDCARD_TAG}: {found.get(WILDCARD_TAG, 'not tagged')}")
    print(f"{'policy mlw-training':<26} {WILDCARD_TAG}: {policy.get(WILDCARD_TAG, 'not tagged')}")
    return [
        ("role with s3:* on * is tagged HIGH, its other tags kept", scientist == {"team": "ds", WILDCARD_TAG: "HIGH"}),
        ("tight training role is not tagged", WILDCARD_TAG not in training),
        ("admin policy version is tagged CRITICAL", policy.get(WILDCARD_TAG) == "CRITICAL"),
    ]


# --- day one: what was there before ML Warden -------------------------------------------------------------

# Bucket -> how it was left open.
LEGACY_BUCKETS = {
    "mlw-legacy-exports": "a public-read ACL, from a 2019 data-sharing project",
    "mlw-legacy-scratch": "no public-access block at all",
    "mlw-legacy-pii-dump": "a public-read ACL, tagged as holding PII (mlwarden:pii=true)",
}


def _seed_before_deployment(s3: Any) -> None:
    """Bad buckets made before ML Warden was deployed: no CloudTrail event about them will ever arrive."""
    for bucket, how in LEGACY_BUCKETS.items():
        s3.create_bucket(Bucket=bucket)
        if "ACL" in how:
            s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
        if "PII" in how:
            s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "mlwarden:pii", "Value": "true"}]})
        print(f"{bucket:<26} {how}")


def _run_sweep(template: Template, *args: str) -> int:
    """`mlwarden sweep --check block_public_s3 --fail-on MEDIUM ARGS`: its report printed, its exit status returned.

    The story is the buckets that were there before ML Warden; the demo's IAM and SageMaker resources are
    flagged on purpose by the steps above, and moto has no Macie finding API for tag_pii_bucket's sweep.
    """
    from mlwarden_cli.main import main  # noqa: PLC0415 - main imports this module's runner lazily

    print(f"$ mlwarden sweep --check block_public_s3 --fail-on MEDIUM {' '.join(args)}".rstrip())
    command = ["sweep", "--template", str(template.path), "--check", "block_public_s3", "--fail-on", "MEDIUM"]
    status = main([*command, *args])
    print(f"(exit status {status})")
    return status


def _sweep_story(template: Template, client: Callable[[str], Any], queue_url: str) -> list[tuple[str, bool]]:
    s3, sqs = client("s3"), client("sqs")
    legacy = {f"arn:aws:s3:::{bucket}" for bucket in LEGACY_BUCKETS}

    def alerted(alerts: list[dict[str, Any]], outcome: str) -> set[str]:
        return {str(_outcome_of(a).get("resource")) for a in alerts if _outcome_of(a).get("outcome") == outcome}

    _heading("Day one: the first sweep finds what was there before ML Warden (dry-run)")
    dry_status = _run_sweep(template)
    unchanged = all(_block_of(s3, bucket) is None for bucket in LEGACY_BUCKETS)
    first_alerts = _received_alerts(sqs, queue_url)

    _heading("The same sweep in enforce mode fixes what the event path would fix")
    enforce_status = _run_sweep(template, "--mode", "enforce")  # 1: it found (and fixed) MEDIUM
    fixed = all(_block_of(s3, bucket) == ALL_ON for bucket in LEGACY_BUCKETS)
    fix_alerts = _received_alerts(sqs, queue_url)

    _heading("A second sweep over the unchanged account sends nothing new")
    second_status = _run_sweep(template, "--mode", "enforce")
    second_alerts = _received_alerts(sqs, queue_url)
    print(f"alerts received: first sweep {len(first_alerts)}, enforce {len(fix_alerts)}, second {len(second_alerts)}")
    return [
        ("the first sweep alerts each bucket older than ML Warden", legacy <= alerted(first_alerts, "would-remediate")),
        ("the first sweep is a dry run: nothing changed; exit 1 (MEDIUM found)", unchanged and dry_status == 1),
        (
            "the enforce sweep blocks every legacy bucket and alerts each fix",
            fixed and enforce_status == 1 and legacy <= alerted(fix_alerts, "remediated"),
        ),
        ("the second sweep finds nothing at MEDIUM or above (exit 0)", second_status == 0),
        ("the second sweep over the unchanged account sends no alert", second_alerts == []),
    ]
