"""Outcomes as Security Hub findings: one per (resource, check, control), NEW → RESOLVED → NEW, SUPPRESSED while
exempt, ARCHIVED when gone; a person's workflow decision is never overridden."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mlwarden import clients
from mlwarden.errors import FindingsNotSent
from tests.conftest import ACCOUNT, AwsWorld, Handler
from tests.securityhub.fake_hub import FakeSecurityHub

BUCKET_ID = "mlwarden/block_public_s3/S3.8/arn:aws:s3:::training-data"
READ_ID = "mlwarden/block_public_s3/S3.2/arn:aws:s3:::training-data"
ALL_ON = dict.fromkeys(("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True)


@pytest.fixture
def hub(aws: AwsWorld, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSecurityHub]:
    fake = FakeSecurityHub()
    real = clients.client

    def client(service: str, region: str | None = None) -> Any:
        return fake if service == "securityhub" else real(service, region)

    client.cache_clear = real.cache_clear  # type: ignore[attr-defined]  # the fixtures clear the real cache
    monkeypatch.setattr(clients, "client", client)
    yield fake


@pytest.fixture
def with_findings(make_handler: Callable[..., Handler]) -> Callable[..., Handler]:
    def make(mode: str = "dry-run") -> Handler:
        return make_handler(mode=mode, env={"SECURITY_HUB_FINDINGS": "true"})

    return make


def test_a_fix_is_one_resolved_passed_finding_with_the_undo(
    aws: AwsWorld, hub: FakeSecurityHub, with_findings: Callable[..., Handler], cloudtrail_event: Any
) -> None:
    aws.bucket("training-data", acl="public-read")

    with_findings(mode="enforce")(cloudtrail_event("PutBucketAcl", "training-data"))

    # S3.8 (the block) and S3.2 (public read) failed and were fixed; S3.3 (public write) never failed.
    assert sorted(hub.findings) == [READ_ID, BUCKET_ID]
    assert hub.findings[READ_ID]["Compliance"]["Status"] == "PASSED"
    finding = hub.findings[BUCKET_ID]
    assert finding["Id"] == BUCKET_ID
    assert finding["ProductArn"] == f"arn:aws:securityhub:us-east-1:{ACCOUNT}:product/{ACCOUNT}/default"
    assert finding["GeneratorId"] == "mlwarden/block_public_s3"
    assert finding["AwsAccountId"] == ACCOUNT
    assert finding["Severity"]["Label"] == "HIGH"
    assert finding["Compliance"] == {"Status": "PASSED", "SecurityControlId": "S3.8", "RelatedRequirements": ["S3.8"]}
    assert finding["Workflow"] == {"Status": "RESOLVED"}
    assert finding["RecordState"] == "ACTIVE"
    assert finding["Resources"][0]["Type"] == "AwsS3Bucket"
    assert finding["Resources"][0]["Id"] == "arn:aws:s3:::training-data"
    assert finding["Resources"][0]["Details"]["AwsS3Bucket"]["PublicAccessBlockConfiguration"] == ALL_ON
    assert finding["ProductFields"]["mlwarden/undo"] == "aws s3api delete-public-access-block --bucket training-data"
    assert finding["ProductFields"]["mlwarden/actions"] == "s3:PutBucketPublicAccessBlock"
    assert "To undo it" in finding["Remediation"]["Recommendation"]["Text"]
    # and the alert still went out
    assert aws.only_alert().outcome["outcome"] == "remediated"


def test_flagged_then_fixed_by_a_person_then_reopened(
    aws: AwsWorld, hub: FakeSecurityHub, with_findings: Callable[..., Handler], cloudtrail_event: Any
) -> None:
    aws.bucket("training-data")
    handler = with_findings()

    handler(cloudtrail_event("DeleteBucketPublicAccessBlock", "training-data"))
    assert hub.findings[BUCKET_ID]["Compliance"]["Status"] == "FAILED"
    assert hub.findings[BUCKET_ID]["Workflow"]["Status"] == "NEW"

    aws.s3.put_public_access_block(Bucket="training-data", PublicAccessBlockConfiguration=ALL_ON)
    handler(cloudtrail_event("PutBucketPublicAccessBlock", "training-data"))
    assert hub.findings[BUCKET_ID]["Compliance"]["Status"] == "PASSED"
    assert hub.findings[BUCKET_ID]["Workflow"]["Status"] == "RESOLVED"

    aws.s3.delete_public_access_block(Bucket="training-data")
    handler(cloudtrail_event("DeleteBucketPublicAccessBlock", "training-data"))
    assert hub.findings[BUCKET_ID]["Compliance"]["Status"] == "FAILED"
    assert hub.findings[BUCKET_ID]["Workflow"]["Status"] == "NEW"


def test_a_compliant_resource_that_never_had_a_finding_gets_none(
    aws: AwsWorld, hub: FakeSecurityHub, with_findings: Callable[..., Handler], cloudtrail_event: Any
) -> None:
    aws.bucket("training-data", block=ALL_ON)

    with_findings()(cloudtrail_event("PutBucketPublicAccessBlock", "training-data"))

    assert hub.findings == {}
    assert [name for name, _ in hub.calls] == ["GetFindings"]


def test_exempt_is_suppressed_with_owner_reason_and_expiry_and_new_again_when_revoked(
    aws: AwsWorld, hub: FakeSecurityHub, with_findings: Callable[..., Handler], cloudtrail_event: Any
) -> None:
    aws.bucket("training-data")
    aws.grant_exemption("arn:aws:s3:::training-data", days=30)
    handler = with_findings(mode="enforce")

    handler(cloudtrail_event("DeleteBucketPublicAccessBlock", "training-data"))
    finding = hub.findings[BUCKET_ID]
    assert finding["Workflow"]["Status"] == "SUPPRESSED"
    assert finding["Compliance"]["Status"] == "FAILED"

    # A second evaluation (the finding exists now): the note carries who, why and until when.
    handler(cloudtrail_event("PutBucketAcl", "training-data"))
    note = hub.findings[BUCKET_ID]["Note"]
    assert note["UpdatedBy"] == "mlwarden"
    assert "SecurityTeam/alice" in note["Text"]
    assert "SEC-1234" in note["Text"]
    assert "until 20" in note["Text"]

    aws.dynamodb.delete_item(
        TableName=aws.exemption_table, Key={"resource": {"S": "arn:aws:s3:::training-data"}, "check": {"S": "all"}}
    )
    with_findings(mode="dry-run")(cloudtrail_event("PutBucketAcl", "training-data"))
    assert hub.findings[BUCKET_ID]["Workflow"]["Status"] == "NEW"


def test_a_persons_notified_or_suppressed_stays_but_a_fix_resolves(
    aws: AwsWorld, hub: FakeSecurityHub, with_findings: Callable[..., Handler], cloudtrail_event: Any
) -> None:
    aws.bucket("training-data")
    dry_run = with_findings()
    dry_run(cloudtrail_event("DeleteBucketPublicAccessBlock", "training-data"))

    hub.person_sets(BUCKET_ID, "NOTIFIED")
    dry_run(cloudtrail_event("PutBucketAcl", "training-data"))
    assert hub.findings[BUCKET_ID]["Workflow"]["Status"] == "NOTIFIED"

    hub.person_sets(BUCKET_ID, "SUPPRESSED")
    dry_run(cloudtrail_event("PutBucketPolicy", "training-data"))
    assert hub.findings[BUCKET_ID]["Workflow"]["Status"] == "SUPPRESSED"

    # Suppressed in Security Hub is not an exemption: ML Warden still fixes, and says so.
    with_findings(mode="enforce")(cloudtrail_event("DeleteBucketPublicAccessBlock", "training-data"))
    assert aws.block_of("training-data") == ALL_ON
    assert hub.findings[BUCKET_ID]["Workflow"]["Status"] == "RESOLVED"


def test_a_deleted_bucket_reported_exposed_archives_its_finding(
    aws: AwsWorld, hub: FakeSecurityHub, with_findings: Callable[..., Handler], cloudtrail_event: Any
) -> None:
    aws.bucket("training-data")
    handler = with_findings()
    handler(cloudtrail_event("DeleteBucketPublicAccessBlock", "training-data"))

    aws.s3.delete_bucket(Bucket="training-data")
    handler(cloudtrail_event("DeleteBucketPublicAccessBlock", "training-data"))

    assert hub.findings[BUCKET_ID]["RecordState"] == "ARCHIVED"


def test_a_refused_finding_raises_for_a_retry_and_the_retry_sends_it(
    aws: AwsWorld, hub: FakeSecurityHub, with_findings: Callable[..., Handler], cloudtrail_event: Any
) -> None:
    aws.bucket("training-data")
    handler = with_findings()
    event = cloudtrail_event("DeleteBucketPublicAccessBlock", "training-data")
    hub.refuse.add(BUCKET_ID)

    with pytest.raises(FindingsNotSent, match="refused"):
        handler(event)
    assert len(aws.alerts()) == 1  # the alert is not held back by Security Hub

    hub.refuse.clear()
    retried = handler(event)

    assert retried["redelivered"] is True
    assert hub.findings[BUCKET_ID]["Workflow"]["Status"] == "NEW"
    assert len(aws.alerts()) == 1
