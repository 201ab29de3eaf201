"""The sweep reads Macie's sensitive-data findings and classifies each bucket as the event path does.

moto has no Macie finding APIs: ListFindings and GetFindings are botocore Stubber answers (with the
parameters they must be called with); S3, DynamoDB and the alert subscriber are moto.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber

from mlwarden import checks, clients
from mlwarden.checks import tag_pii_bucket as pii_check
from mlwarden.inventory import Inventory
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger
from mlwarden.settings import SettingsError
from mlwarden.sweep import evaluate_targets, list_targets, new_sweep_id, now_iso
from tests.conftest import ACCOUNT, REGION, AwsWorld
from tests.sweep.support import assert_same_outcome, sweep, sweep_settings

UNIT = checks.load("tag_pii_bucket")
# A finding recorded from a real Macie job (see tests/fixtures/real/NOTICE.md: aws-samples, MIT-0).
REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "macie" / "finding_detail_only"
RECORDED = json.loads((REAL / "aws-samples-reveal__csv.json").read_text())
ALL_ON = dict.fromkeys(("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True)
WINDOW_MS = 30 * 86_400_000


class Around:
    """Equal to a millisecond time within a minute of `expected` (the window's start is computed at run time)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected

    def __eq__(self, other: object) -> bool:
        return isinstance(other, int) and abs(other - self.expected) < 60_000

    __hash__ = None  # type: ignore[assignment]  # equality is approximate: not a dict key

    def __repr__(self) -> str:
        return f"about {self.expected}"


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def list_params(**extra: Any) -> dict[str, Any]:
    """What ListFindings must be asked: unarchived sensitive-data findings of the last 30 days, oldest first."""
    return {
        "findingCriteria": {
            "criterion": {
                "category": {"eq": ["CLASSIFICATION"]},
                "archived": {"eq": ["false"]},
                "updatedAt": {"gte": Around(_now_ms() - WINDOW_MS)},
            }
        },
        "sortCriteria": {"attributeName": "updatedAt", "orderBy": "ASC"},
        "maxResults": pii_check.LIST_FINDINGS_PAGE,
        **extra,
    }


def get_params(ids: list[str]) -> dict[str, Any]:
    return {"findingIds": ids, "sortCriteria": {"attributeName": "updatedAt", "orderBy": "ASC"}}


def _without_nulls(value: Any) -> Any:
    # EventBridge writes absent fields as null; the API leaves them out.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def api_finding(bucket: str, finding_id: str = "f-1", updated: str = "2026-11-20T10:00:00Z") -> dict[str, Any]:
    """The recorded finding as GetFindings returns it: about `bucket`, times as botocore parses them."""
    finding = _without_nulls(copy.deepcopy(RECORDED))
    finding["id"] = finding_id
    finding["resourcesAffected"]["s3Bucket"]["name"] = bucket
    finding["resourcesAffected"]["s3Bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    finding["accountId"], finding["region"] = ACCOUNT, REGION
    finding["updatedAt"] = dt.datetime.fromisoformat(updated.replace("Z", "+00:00"))
    finding["createdAt"] = finding["updatedAt"]
    return finding


def as_event(finding: dict[str, Any]) -> dict[str, Any]:
    """The same finding as EventBridge delivers it."""
    detail = json.loads(json.dumps(finding, default=lambda t: t.isoformat().replace("+00:00", "Z")))
    return {
        "version": "0",
        "id": f"event-{detail['id']}",
        "detail-type": "Macie Finding",
        "source": "aws.macie",
        "account": ACCOUNT,
        "time": "2026-11-20T10:00:05Z",
        "region": REGION,
        "resources": [],
        "detail": detail,
    }


@pytest.fixture
def macie(aws: AwsWorld) -> Iterator[Stubber]:
    with Stubber(clients.client("macie2", REGION)) as stub:
        yield stub
        stub.assert_no_pending_responses()


def expect_findings(stub: Stubber, *findings: dict[str, Any]) -> None:
    ids = [f["id"] for f in findings]
    stub.add_response("list_findings", {"findingIds": ids}, list_params())
    if ids:
        stub.add_response("get_findings", {"findings": list(findings)}, get_params(ids))


def _sweep(monkeypatch: pytest.MonkeyPatch, aws: AwsWorld, mode: str = "enforce") -> list[Outcome]:
    return sweep(UNIT, monkeypatch, aws, mode)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"block": ALL_ON}, OutcomeKind.REMEDIATED),
        ({"acl": "public-read", "block": None}, OutcomeKind.REMEDIATED),
        ({"block": None}, OutcomeKind.REMEDIATED),
    ],
    ids=["private", "public", "no-block"],
)
def test_event_path_and_sweep_classify_a_bucket_the_same(
    aws: AwsWorld,
    make_handler: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    state: dict[str, Any],
    expected: OutcomeKind,
) -> None:
    aws.bucket("via-event", **state)
    aws.bucket("via-sweep", **state)
    by_event = make_handler(app="tag_pii_bucket")(as_event(api_finding("via-event")))
    clients.client.cache_clear()
    with Stubber(clients.client("macie2", REGION)) as stub:
        expect_findings(stub, api_finding("via-sweep"))

        (by_sweep,) = _sweep(monkeypatch, aws)

        stub.assert_no_pending_responses()

    assert_same_outcome(by_event, by_sweep, expected)
    assert json.dumps(by_event["details"]).replace("via-event", "via-sweep") == json.dumps(by_sweep.details)
    assert aws.tags_of("via-event") == aws.tags_of("via-sweep")
    assert aws.block_of("via-event") == aws.block_of("via-sweep")


def test_a_second_sweep_over_unchanged_findings_sends_nothing(
    aws: AwsWorld, macie: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.bucket("pii-open", acl="public-read")
    aws.bucket("pii-private", block=ALL_ON)
    findings = (api_finding("pii-open", "f-open"), api_finding("pii-private", "f-private"))
    expect_findings(macie, *findings)
    first = _sweep(monkeypatch, aws)
    assert [o.outcome for o in first] == [OutcomeKind.REMEDIATED, OutcomeKind.REMEDIATED]
    assert first[0].severity is Severity.CRITICAL  # PII in a public bucket: locked
    assert aws.block_of("pii-open") == ALL_ON
    assert len(aws.alerts()) == 2

    expect_findings(macie, *findings)
    second = _sweep(monkeypatch, aws)

    assert [o.outcome for o in second] == [OutcomeKind.COMPLIANT, OutcomeKind.COMPLIANT]
    assert len(aws.alerts()) == 2


def test_the_listing_reads_every_page_and_every_batch(
    aws: AwsWorld, macie: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pii_check, "LIST_FINDINGS_PAGE", 2)
    monkeypatch.setattr(pii_check, "GET_FINDINGS_BATCH", 2)
    findings = [api_finding(f"bucket-{i}", f"f-{i}") for i in range(3)]
    for finding in findings:
        aws.bucket(finding["resourcesAffected"]["s3Bucket"]["name"], block=ALL_ON)
    macie.add_response("list_findings", {"findingIds": ["f-0", "f-1"], "nextToken": "page-2"}, list_params())
    macie.add_response("list_findings", {"findingIds": ["f-2"]}, list_params(nextToken="page-2"))
    macie.add_response("get_findings", {"findings": findings[:2]}, get_params(["f-0", "f-1"]))
    macie.add_response("get_findings", {"findings": findings[2:]}, get_params(["f-2"]))

    outcomes = _sweep(monkeypatch, aws)

    assert [o.resource for o in outcomes] == [f"arn:aws:s3:::bucket-{i}" for i in range(3)]
    assert all(aws.tags_of(f"bucket-{i}")["mlwarden:pii"] == "true" for i in range(3))


def test_a_bucket_deleted_between_listing_and_evaluation_is_ignored(
    aws: AwsWorld, macie: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.bucket("short-lived", acl="public-read")
    expect_findings(macie, api_finding("short-lived"))
    settings = sweep_settings(monkeypatch, aws, "enforce")
    inventory = Inventory(ACCOUNT, REGION)
    targets = list_targets(UNIT, inventory)
    aws.s3.delete_bucket(Bucket="short-lived")

    trigger = Trigger.sweep(new_sweep_id(), ACCOUNT, REGION, now_iso())
    (outcome,) = evaluate_targets(UNIT, targets, inventory, settings=settings, trigger=trigger)

    assert outcome.outcome is OutcomeKind.IGNORED
    assert outcome.resource == "arn:aws:s3:::short-lived"
    assert aws.alerts() == []


def refuse_listing(stub: Stubber, message: str, status: int) -> None:
    stub.add_client_error(
        "list_findings",
        service_error_code="AccessDeniedException",
        service_message=message,
        http_status_code=status,
        expected_params=list_params(),
    )


def test_macie_not_enabled_is_one_outcome_that_says_so(
    aws: AwsWorld, macie: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_listing(macie, "Macie is not enabled.", 401)

    outcomes = _sweep(monkeypatch, aws)

    assert len(outcomes) == 1
    assert outcomes[0].outcome is OutcomeKind.FLAGGED
    assert outcomes[0].resource == f"{ACCOUNT}/{REGION}"
    assert "Macie is not enabled" in outcomes[0].reason
    assert aws.only_alert().outcome["details"] == {"macie_enabled": False}


def test_a_missing_permission_is_not_taken_for_macie_being_off(
    aws: AwsWorld, macie: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_listing(macie, "User is not authorized to perform: macie2:ListFindings", 403)

    (outcome,) = _sweep(monkeypatch, aws)

    assert outcome.outcome is OutcomeKind.FAILED
    assert outcome.severity is Severity.HIGH
    assert outcome.details["failed_action"] == "macie2:ListFindings"


def test_a_bucket_handed_over_as_a_key_has_its_findings_read_again(
    aws: AwsWorld, macie: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.bucket("handed-over", block=ALL_ON)
    finding = api_finding("handed-over", "f-handed")
    parsed = pii_check.finding_from_detail(pii_check._as_json(finding))
    assert isinstance(parsed, pii_check.PiiFinding)
    key = json.loads(json.dumps(UNIT.key_of(parsed)))
    assert key == {"bucket": "handed-over"}  # no object key, no detections in the hand-over
    one_bucket = list_params()
    one_bucket["findingCriteria"]["criterion"]["resourcesAffected.s3Bucket.name"] = {"eq": ["handed-over"]}
    macie.add_response("list_findings", {"findingIds": ["f-handed"]}, one_bucket)
    macie.add_response("get_findings", {"findings": [finding]}, get_params(["f-handed"]))

    trigger = Trigger.sweep(new_sweep_id(), ACCOUNT, REGION, now_iso())
    outcome = UNIT.evaluate(UNIT.target_of_key(key), trigger, sweep_settings(monkeypatch, aws, "enforce"))

    assert outcome.outcome is OutcomeKind.REMEDIATED
    assert aws.tags_of("handed-over")["mlwarden:pii"] == "true"


def test_the_findings_of_one_bucket_are_one_evaluation_that_merges_them_all(
    aws: AwsWorld, macie: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three findings (one per object) about one bucket: High personal data, then a Medium custom identifier
    aws.bucket("many-objects", block=ALL_ON)
    personal = api_finding("many-objects", "f-1", updated="2026-11-20T10:00:00Z")
    older = api_finding("many-objects", "f-0", updated="2026-11-19T10:00:00Z")
    custom = api_finding("many-objects", "f-2", updated="2026-11-21T10:00:00Z")
    custom["severity"] = {"score": 2, "description": "Medium"}
    custom["classificationDetails"]["result"]["sensitiveData"] = []
    custom["classificationDetails"]["result"]["customDataIdentifiers"] = {
        "detections": [{"arn": "id-1", "name": "employee id", "count": 3}],
        "totalCount": 3,
    }
    expect_findings(macie, older, personal, custom)

    outcomes = _sweep(monkeypatch, aws)

    # Then one outcome, and the tags say what merging the three findings one by one would say
    (outcome,) = outcomes
    assert outcome.details["finding"]["findings_merged"] == 3
    tags = aws.tags_of("many-objects")
    assert tags["mlwarden:pii-severity"] == "High"
    assert "custom:employee_id" in tags["mlwarden:pii-types"].split()
    assert "NAME" in tags["mlwarden:pii-types"].split()
    assert tags["mlwarden:pii-last-finding"] == "f-2"
    assert tags["mlwarden:pii-last-seen"] == "2026-11-21T10:00:00Z"
    assert len(aws.alerts()) == 1


@pytest.mark.parametrize("value", ["0", "91", "thirty", "-1"])
def test_the_findings_window_is_validated(value: str) -> None:
    with pytest.raises(SettingsError, match="SWEEP_FINDINGS_DAYS"):
        pii_check.load_options({"SWEEP_FINDINGS_DAYS": value})


# --- throttling: below botocore's retries, so the standard retry mode is what gets the listing through ------


class FakeMacie:
    """Macie's REST-JSON answers at the HTTP layer: ListFindings pages, one ThrottlingException in between."""

    def __init__(self, pages: list[dict[str, Any]], findings: list[dict[str, Any]]) -> None:
        self.answers: list[tuple[int, dict[str, Any]]] = [(200, pages[0])]
        for page in pages[1:]:
            self.answers += [(429, {"message": "Rate exceeded"}), (200, page)]
        self.answers.append((200, {"findings": findings}))
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def install(self) -> None:
        clients.client("macie2", REGION).meta.events.register_first("before-send.macie2", self.answer)

    def answer(self, request: Any, **_: Any) -> AWSResponse:
        body = request.body or b"{}"
        self.requests.append((request.url.rsplit("/", 2)[-1], json.loads(body)))
        status, payload = self.answers.pop(0)
        headers = {"Content-Type": "application/json"}
        if status != 200:
            headers["x-amzn-ErrorType"] = "ThrottlingException"
        return AWSResponse(request.url, status, headers, _Raw(json.dumps(payload, default=str).encode()))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield self._body


def test_throttling_mid_listing_is_retried_and_nothing_is_lost(aws: AwsWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.bucket("first-page", block=ALL_ON)
    aws.bucket("second-page", block=ALL_ON)
    findings = [api_finding("first-page", "f-1"), api_finding("second-page", "f-2")]
    fake = FakeMacie([{"findingIds": ["f-1"], "nextToken": "page-2"}, {"findingIds": ["f-2"]}], findings)
    fake.install()

    outcomes = _sweep(monkeypatch, aws)

    assert [path for path, _ in fake.requests] == ["findings", "findings", "findings", "describe"]
    assert fake.requests[2][1]["nextToken"] == "page-2"  # the throttled page, asked again
    assert fake.requests[3][1]["findingIds"] == ["f-1", "f-2"]
    assert [o.outcome for o in outcomes] == [OutcomeKind.REMEDIATED, OutcomeKind.REMEDIATED]
    assert aws.tags_of("second-page")["mlwarden:pii"] == "true"
