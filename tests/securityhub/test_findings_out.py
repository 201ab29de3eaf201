"""The findings' shape for every check, batching in the sweep, moto's Security Hub, settings and template."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from mlwarden import checks, clients, securityhub
from mlwarden.inventory import Inventory
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger
from mlwarden.settings import SettingsError, load_settings
from mlwarden.sweep import Summary, new_sweep_id, sweep_check
from tests.conftest import ACCOUNT, REGION, AwsWorld
from tests.securityhub.fake_hub import FakeSecurityHub, validate

ROOT = Path(__file__).resolve().parents[2]
TRIGGER = Trigger(
    "e-1",
    "aws.s3",
    "cloudtrail",
    "PutBucketAcl",
    "arn:aws:sts::123456789012:assumed-role/x/y",
    "2026-12-01T00:00:00Z",
    ACCOUNT,
    REGION,
)

# One outcome per check and resource kind ML Warden reports on, every outcome kind that makes a finding.
RESOURCES = [
    ("block_public_s3", "arn:aws:s3:::training-data", "AwsS3Bucket"),
    ("block_public_s3", f"AWS::::Account:{ACCOUNT}", "AwsAccount"),
    ("tag_pii_bucket", "arn:aws:s3:::customer-exports", "AwsS3Bucket"),
    ("flag_wildcard_iam", f"arn:aws:iam::{ACCOUNT}:policy/ml/AdminForNotebooks", "AwsIamPolicy"),
    ("flag_wildcard_iam", f"arn:aws:iam::{ACCOUNT}:role/DataScientist", "AwsIamRole"),
    ("flag_wildcard_iam", f"arn:aws:iam::{ACCOUNT}:user/bob", "AwsIamUser"),
    (
        "check_sagemaker_encryption",
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:notebook-instance/nb",
        "AwsSageMakerNotebookInstance",
    ),
    ("check_sagemaker_encryption", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/train-1", "Other"),
    ("guard_ml_keys", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab", "AwsKmsKey"),
    ("watch_own_inputs", f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/main", "AwsCloudTrailTrail"),
]
KINDS = [
    OutcomeKind.FLAGGED,
    OutcomeKind.REMEDIATED,
    OutcomeKind.EXEMPT,
    OutcomeKind.WOULD_REMEDIATE,
    OutcomeKind.FAILED,
]


def _outcome(check: str, resource: str, kind: OutcomeKind, controls: tuple[str, ...] = ()) -> Outcome:
    return Outcome(
        check=check,
        outcome=kind,
        severity=Severity.HIGH,
        reason="x" * 3000,
        trigger=TRIGGER,
        resource=resource,
        actions=("s3:PutBucketPublicAccessBlock",) if kind is OutcomeKind.REMEDIATED else (),
        undo="aws s3api delete-public-access-block --bucket training-data",
        controls=controls,
        details={"exemption": "registry exemption until 2027-01-01, granted by alice: SEC-1"},
        findings=("ACL grants READ to AllUsers",),
        next_step="Make the bucket private.",
    )


@pytest.mark.parametrize(("check", "resource", "asff_type"), RESOURCES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_checks_findings_are_valid_asff(check: str, resource: str, asff_type: str, kind: OutcomeKind) -> None:
    planned = securityhub.plan(_outcome(check, resource, kind, controls=("S3.8", "SageMaker.5")))

    assert len(planned) == 2  # one per control
    assert len({p.id for p in planned}) == 2
    findings = [p.finding for p in planned]
    validate("BatchImportFindings", {"Findings": findings})  # botocore's model: types, required fields
    for finding in findings:
        assert finding["Resources"][0]["Type"] == asff_type
        assert len(finding["Title"]) <= 256
        assert len(finding["Description"]) <= 1024
        assert len(finding["Remediation"]["Recommendation"]["Text"]) <= 512
        assert finding["Compliance"]["SecurityControlId"] in ("S3.8", "SageMaker.5")


def test_the_finding_id_is_stable_and_bounded() -> None:
    long = "arn:aws:iam::123456789012:policy/" + "p/" * 400 + "x"
    first = securityhub.finding_id("flag_wildcard_iam", "IAM.1", long)
    assert first == securityhub.finding_id("flag_wildcard_iam", "IAM.1", long)
    assert len(first) <= 512
    assert securityhub.finding_id("flag_wildcard_iam", "IAM.1", long + "y") != first


def test_outcomes_without_a_resource_or_ignored_make_no_finding() -> None:
    assert securityhub.plan(_outcome("block_public_s3", "arn:aws:s3:::b", OutcomeKind.IGNORED)) == []
    no_resource = Outcome("block_public_s3", OutcomeKind.FLAGGED, Severity.HIGH, "r", TRIGGER)
    assert securityhub.plan(no_resource) == []


@pytest.fixture
def hub(aws: AwsWorld, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSecurityHub]:
    fake = FakeSecurityHub()
    real = clients.client

    def client(service: str, region: str | None = None) -> Any:
        return fake if service == "securityhub" else real(service, region)

    client.cache_clear = real.cache_clear  # type: ignore[attr-defined]
    monkeypatch.setattr(clients, "client", client)
    yield fake


def test_the_sweep_sends_findings_in_batches_and_reports_what_is_refused(
    aws: AwsWorld, hub: FakeSecurityHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(250):
        aws.s3.create_bucket(Bucket=f"open-{number:03d}")
    hub.refuse.add("mlwarden/block_public_s3/S3.8/arn:aws:s3:::open-007")
    for name, value in {
        "ALERT_TOPIC_ARN": aws.topic_arn,
        "REMEDIATION_MODE": "dry-run",
        "SECURITY_HUB_FINDINGS": "true",
    }.items():
        monkeypatch.setenv(name, value)
    summary = Summary(new_sweep_id())

    outcomes = list(
        sweep_check(
            checks.load("block_public_s3"),
            Inventory(ACCOUNT, REGION),
            load_settings(),
            summary.sweep_id,
            summary=summary,
        )
    )

    assert len(outcomes) == 251  # 250 buckets and the account
    imports = [size for name, size in hub.calls if name == "BatchImportFindings"]
    assert sum(imports) == 251
    assert max(imports) <= 100
    assert all(size <= 20 for name, size in hub.calls if name == "GetFindings")
    assert len(hub.findings) == 250
    assert summary.findings_not_sent == ["mlwarden/block_public_s3/S3.8/arn:aws:s3:::open-007: InvalidInput: refused"]


def test_moto_security_hub_holds_the_finding_after_a_fix(
    aws: AwsWorld, make_handler: Any, cloudtrail_event: Any
) -> None:
    securityhub_client = boto3.client("securityhub", region_name=REGION)
    securityhub_client.enable_security_hub()
    aws.bucket("training-data", acl="public-read")

    make_handler(mode="enforce", env={"SECURITY_HUB_FINDINGS": "true"})(
        cloudtrail_event("PutBucketAcl", "training-data")
    )

    findings = securityhub_client.get_findings()["Findings"]
    assert sorted(f["Id"] for f in findings) == [
        "mlwarden/block_public_s3/S3.2/arn:aws:s3:::training-data",
        "mlwarden/block_public_s3/S3.8/arn:aws:s3:::training-data",
    ]
    assert findings[0]["Compliance"]["Status"] == "PASSED"
    assert findings[0]["Workflow"]["Status"] == "RESOLVED"


@pytest.mark.parametrize(("raw", "expected"), [(None, False), ("", False), ("true", True), ("FALSE", False)])
def test_security_hub_findings_setting(monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: bool) -> None:
    monkeypatch.setenv("ALERT_TOPIC_ARN", f"arn:aws:sns:{REGION}:{ACCOUNT}:alerts")
    if raw is None:
        monkeypatch.delenv("SECURITY_HUB_FINDINGS", raising=False)
    else:
        monkeypatch.setenv("SECURITY_HUB_FINDINGS", raw)
    assert load_settings().security_hub_findings is expected


def test_an_unreadable_security_hub_findings_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_TOPIC_ARN", f"arn:aws:sns:{REGION}:{ACCOUNT}:alerts")
    monkeypatch.setenv("SECURITY_HUB_FINDINGS", "yes please")
    with pytest.raises(SettingsError, match=r"SECURITY_HUB_FINDINGS must be one of true \| false"):
        load_settings()


def _template() -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return {suffix: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {suffix: loader.construct_sequence(node, deep=True)}
        return {suffix: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]

    Loader.add_multi_constructor("!", any_tag)
    return yaml.load((ROOT / "template.yaml").read_text(encoding="utf-8"), Loader=Loader)


def test_every_function_role_may_send_findings_only_when_the_parameter_says_so_and_only_to_its_account() -> None:
    template = _template()
    assert template["Parameters"]["SecurityHubFindings"]["Default"] == "false"
    assert template["Globals"]["Function"]["Environment"]["Variables"]["SECURITY_HUB_FINDINGS"] == {
        "Ref": "SecurityHubFindings"
    }
    policy = template["Resources"]["SecurityHubFindingsPolicy"]
    assert policy["Condition"] == "SecurityHubFindingsEnabled"
    function_roles = {
        resource["Properties"]["Role"]["GetAtt"].split(".")[0]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
        and "SECURITY_HUB_FINDINGS" not in (resource["Properties"].get("Environment", {}).get("Variables") or {})
    }
    assert {role["Ref"] for role in policy["Properties"]["Roles"]} == function_roles
    statements = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    assert statements["ImportOwnFindings"]["Action"] == "securityhub:BatchImportFindings"
    assert statements["ImportOwnFindings"]["Resource"]["Sub"].endswith(":product/${AWS::AccountId}/default")
    assert sorted(statements["ReadAndMoveOwnFindings"]["Action"]) == sorted(securityhub.HUB_PERMISSIONS)
    assert statements["ReadAndMoveOwnFindings"]["Resource"]["Sub"].endswith(":hub/default")
    imported = {statements["ImportOwnFindings"]["Action"], *statements["ReadAndMoveOwnFindings"]["Action"]}
    assert imported == securityhub.PERMISSIONS
