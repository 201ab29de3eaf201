"""watch_inputs against moto: what blinds ML Warden is undone or alerted, with the resulting AWS state asserted.

Shapes: the CloudTrail records in events/cloudtrail, events/eventbridge, events/lambda, events/iam and
events/macie follow the request parameters of the CloudTrail, EventBridge, Lambda, IAM and Macie API
references (StopLogging `name`, PutEventSelectors `trailName`/`eventSelectors`, DisableRule `name`,
RemoveTargets `rule`, Lambda's versioned event names such as UpdateFunctionCode20150331v2).
"""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from mlwarden import clients
from tests.conftest import ACCOUNT, REGION, AwsWorld, Handler, load_sample

TRAIL = "mlw-management-events"
TRAIL_ARN = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/{TRAIL}"
OWN_RULE = "mlwarden-BlockPublicS3FunctionCloudTrail-1A2B3C4D5E6F"
WATCH_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/mlwarden-WatchInputsRole-A1S2D3F4G5H6"
DEPLOYER_ARN = f"arn:aws:iam::{ACCOUNT}:role/MlwardenDeployer"
DEPLOYER_SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/MlwardenDeployer/ci"
INTRUDER = f"arn:aws:sts::{ACCOUNT}:assumed-role/DataScientist/jdoe"


@pytest.fixture
def watch(make_handler: Callable[..., Handler]) -> Callable[..., Handler]:
    def make(mode: str = "enforce", **env: str | None) -> Handler:
        return make_handler(
            app="watch_inputs",
            mode=mode,
            remediator_role_arn=WATCH_ROLE_ARN,
            env={
                "OWN_NAME_PREFIX": "mlwarden-",
                "DEPLOYER_PRINCIPAL_ARN": DEPLOYER_ARN,
                "CANARY_PARAMETER": "/mlwarden/liveness-canary",
                "CANARY_ROLE_NAME": "mlwarden-liveness-canary",
                **env,
            },
        )

    return make


def _trail(aws: AwsWorld, *, logging: bool = True, selectors: list[dict[str, Any]] | None = None) -> Any:
    aws.s3.create_bucket(Bucket="mlw-trail-logs")
    cloudtrail = boto3.client("cloudtrail", region_name=REGION)
    cloudtrail.create_trail(Name=TRAIL, S3BucketName="mlw-trail-logs", IsMultiRegionTrail=True)
    if selectors is not None:
        cloudtrail.put_event_selectors(TrailName=TRAIL, EventSelectors=selectors)
    if logging:
        cloudtrail.start_logging(Name=TRAIL)
    return cloudtrail


def _as(event: dict[str, Any], arn: str, role_arn: str | None = None) -> dict[str, Any]:
    event = copy.deepcopy(event)
    identity = event["detail"]["userIdentity"]
    identity["arn"] = arn
    if role_arn is None:
        identity.pop("sessionContext", None)
        identity["type"] = "IAMUser"
    else:
        identity["sessionContext"]["sessionIssuer"]["arn"] = role_arn
    return event


# --- CloudTrail ------------------------------------------------------------------------------------------


def test_stop_logging_ends_with_the_trail_logging_again_and_one_critical_alert(
    aws: AwsWorld, watch: Callable[..., Handler]
) -> None:
    # Given a logging trail that records management events, stopped by someone
    cloudtrail = _trail(aws)
    cloudtrail.stop_logging(Name=TRAIL_ARN)
    # When the StopLogging event arrives
    outcome = watch()(load_sample("cloudtrail/stop-logging.json"))
    # Then the trail logs again, and one CRITICAL alert names the actor
    assert cloudtrail.get_trail_status(Name=TRAIL_ARN)["IsLogging"] is True
    assert outcome["outcome"] == "remediated"
    alert = aws.only_alert()
    assert alert.outcome["severity"] == "CRITICAL"
    assert alert.outcome["actions"] == ["cloudtrail:StartLogging"]
    assert alert.outcome["trigger"]["actor"].startswith(INTRUDER)
    assert alert.outcome["controls"] == ["CloudTrail.1", "CloudTrail.3"]
    assert alert.outcome["undo"].startswith("aws cloudtrail stop-logging --name ")


def test_stop_logging_in_dry_run_leaves_the_trail_stopped_and_says_what_it_would_do(
    aws: AwsWorld, watch: Callable[..., Handler]
) -> None:
    cloudtrail = _trail(aws)
    cloudtrail.stop_logging(Name=TRAIL_ARN)
    outcome = watch(mode="dry-run")(load_sample("cloudtrail/stop-logging.json"))
    assert cloudtrail.get_trail_status(Name=TRAIL_ARN)["IsLogging"] is False
    assert outcome["outcome"] == "would-remediate"
    assert aws.only_alert().outcome["severity"] == "CRITICAL"


def test_a_stopped_trail_that_records_no_management_events_is_left_alone(
    aws: AwsWorld, watch: Callable[..., Handler]
) -> None:
    # A data-events-only trail does not feed ML Warden: stopping it blinds nothing ML Warden watches.
    data_only = [{"ReadWriteType": "All", "IncludeManagementEvents": False, "DataResources": []}]
    cloudtrail = _trail(aws, selectors=data_only, logging=False)
    outcome = watch()(load_sample("cloudtrail/stop-logging.json"))
    assert cloudtrail.get_trail_status(Name=TRAIL_ARN)["IsLogging"] is False
    assert outcome["outcome"] == "compliant"
    assert aws.alerts() == []


def test_a_trail_that_cannot_be_restarted_fails_loudly_and_is_retried(
    aws: AwsWorld, watch: Callable[..., Handler]
) -> None:
    # An organization trail cannot be started from a member account: AccessDenied must not end quietly.
    from mlwarden.errors import RemediationFailed  # noqa: PLC0415

    cloudtrail = _trail(aws)
    cloudtrail.stop_logging(Name=TRAIL_ARN)
    handler = watch()
    real = clients.client("cloudtrail")
    stubber = Stubber(real)
    trail = cloudtrail.get_trail(Name=TRAIL_ARN)["Trail"]
    stubber.add_response("get_trail", {"Trail": trail}, {"Name": TRAIL_ARN})
    stubber.add_response("get_event_selectors", {"TrailARN": TRAIL_ARN, "EventSelectors": []}, {"TrailName": TRAIL_ARN})
    stubber.add_response("get_trail_status", {"IsLogging": False}, {"Name": TRAIL_ARN})
    stubber.add_client_error(
        "start_logging", "AccessDeniedException", "not authorized", 400, expected_params={"Name": TRAIL_ARN}
    )
    with stubber, pytest.raises(RemediationFailed):
        handler(load_sample("cloudtrail/stop-logging.json"))
    stubber.assert_no_pending_responses()
    alert = aws.only_alert()
    assert (alert.outcome["outcome"], alert.outcome["severity"]) == ("failed", "CRITICAL")


def test_narrowed_selectors_alert_critical_with_the_previous_configuration_and_an_undo_that_restores_it(
    aws: AwsWorld, watch: Callable[..., Handler]
) -> None:
    # Given a trail ML Warden has seen feeding it (management events plus S3 data events)
    before = [
        {
            "ReadWriteType": "All",
            "IncludeManagementEvents": True,
            "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::mlw-patient-records/"]}],
        }
    ]
    cloudtrail = _trail(aws, selectors=before)
    handler = watch()
    stop = load_sample("cloudtrail/stop-logging.json")
    cloudtrail.stop_logging(Name=TRAIL_ARN)
    handler(stop)  # restarted, and its configuration remembered
    seen = len(aws.alerts())
    # When someone narrows its selectors to read-only data events
    narrowed = [{"ReadWriteType": "ReadOnly", "IncludeManagementEvents": False, "DataResources": []}]
    cloudtrail.put_event_selectors(TrailName=TRAIL, EventSelectors=narrowed)
    outcome = handler(load_sample("cloudtrail/put-event-selectors-no-management.json"))
    # Then one CRITICAL alert carries the previous selectors and an undo that puts them back
    assert outcome["outcome"] == "flagged"
    [alert] = aws.alerts()[seen:]
    assert alert.outcome["severity"] == "CRITICAL"
    assert alert.outcome["previous_state"]["selectors"]["EventSelectors"][0]["IncludeManagementEvents"] is True
    undo = shlex.split(alert.outcome["undo"])
    restored = json.loads(undo[undo.index("--event-selectors") + 1])
    cloudtrail.put_event_selectors(TrailName=TRAIL, EventSelectors=restored)
    now = cloudtrail.get_event_selectors(TrailName=TRAIL_ARN)["EventSelectors"]
    assert now[0]["IncludeManagementEvents"] is True
    assert now[0]["DataResources"][0]["Values"] == ["arn:aws:s3:::mlw-patient-records/"]


def test_deleting_the_trail_alerts_critical_with_the_command_that_recreates_it(
    aws: AwsWorld, watch: Callable[..., Handler]
) -> None:
    cloudtrail = _trail(aws)
    handler = watch()
    cloudtrail.stop_logging(Name=TRAIL_ARN)
    handler(load_sample("cloudtrail/stop-logging.json"))  # seen, remembered
    seen = len(aws.alerts())
    cloudtrail.delete_trail(Name=TRAIL)
    outcome = handler(load_sample("cloudtrail/delete-trail.json"))
    assert outcome["outcome"] == "flagged"
    [alert] = aws.alerts()[seen:]
    assert alert.outcome["severity"] == "CRITICAL"
    assert alert.outcome["previous_state"]["S3BucketName"] == "mlw-trail-logs"
    assert "--s3-bucket-name mlw-trail-logs" in alert.outcome["undo"]
    assert "--is-multi-region-trail" in alert.outcome["undo"]


def test_an_update_that_drops_other_regions_and_global_events_is_critical(
    aws: AwsWorld, watch: Callable[..., Handler]
) -> None:
    cloudtrail = _trail(aws)
    cloudtrail.update_trail(Name=TRAIL, IsMultiRegionTrail=False, IncludeGlobalServiceEvents=False)
    outcome = watch()(load_sample("cloudtrail/update-trail-single-region.json"))
    assert outcome["outcome"] == "flagged"
    alert = aws.only_alert()
    assert alert.outcome["severity"] == "CRITICAL"
    assert "--is-multi-region-trail --include-global-service-events" in alert.outcome["undo"]


def test_two_stop_logging_calls_in_one_day_are_two_alerts(aws: AwsWorld, watch: Callable[..., Handler]) -> None:
    # Attack: stop the trail, let ML Warden restart it, stop it again, counting on the alert dedup.
    cloudtrail = _trail(aws)
    handler = watch()
    for _ in range(2):
        cloudtrail.stop_logging(Name=TRAIL_ARN)
        event = load_sample("cloudtrail/stop-logging.json")
        event["id"] = f"{event['id']}-{_}"
        event["detail"]["eventID"] = f"{event['detail']['eventID']}-{_}"
        handler(event)
        assert cloudtrail.get_trail_status(Name=TRAIL_ARN)["IsLogging"] is True
    assert [a.outcome["outcome"] for a in aws.alerts()] == ["remediated", "remediated"]


# --- Macie -----------------------------------------------------------------------------------------------


def test_disabling_macie_alerts_high_with_the_actor(aws: AwsWorld, watch: Callable[..., Handler]) -> None:
    macie = boto3.client("macie2", region_name=REGION)
    macie.enable_macie()
    macie.disable_macie()
    outcome = watch()(load_sample("macie/disable-macie.json"))
    assert outcome["outcome"] == "flagged"
    alert = aws.only_alert()
    assert (alert.outcome["severity"], alert.outcome["controls"]) == ("HIGH", ["Macie.1"])
    assert alert.outcome["trigger"]["actor"].startswith(INTRUDER)


def test_a_paused_macie_is_switched_on_again_only_when_asked(aws: AwsWorld, watch: Callable[..., Handler]) -> None:
    # moto has no UpdateMacieSession: the session's answers are stubbed, with the parameters checked.
    handler = watch(REENABLE_MACIE="true")
    macie = clients.client("macie2")
    stubber = Stubber(macie)
    stubber.add_response("get_macie_session", {"status": "PAUSED"}, {})
    stubber.add_response("update_macie_session", {}, {"status": "ENABLED"})
    stubber.add_response("get_macie_session", {"status": "ENABLED"}, {})
    with stubber:
        outcome = handler(load_sample("macie/update-macie-session-paused.json"))
    stubber.assert_no_pending_responses()
    assert outcome["outcome"] == "remediated"
    assert aws.only_alert().outcome["controls"] == ["Macie.1"]


def test_a_paused_macie_is_only_alerted_by_default(aws: AwsWorld, watch: Callable[..., Handler]) -> None:
    handler = watch()
    stubber = Stubber(clients.client("macie2"))
    stubber.add_response("get_macie_session", {"status": "PAUSED"}, {})
    with stubber:
        outcome = handler(load_sample("macie/update-macie-session-paused.json"))
    stubber.assert_no_pending_responses()
    assert (outcome["outcome"], outcome["severity"]) == ("flagged", "HIGH")
    assert "update-macie-session --status ENABLED" in aws.only_alert().outcome["next_step"]


def test_automated_discovery_turned_off_is_alerted_high(aws: AwsWorld, watch: Callable[..., Handler]) -> None:
    handler = watch()
    stubber = Stubber(clients.client("macie2"))
    stubber.add_response("get_macie_session", {"status": "ENABLED"}, {})
    stubber.add_response("get_automated_discovery_configuration", {"status": "DISABLED"}, {})
    with stubber:
        outcome = handler(load_sample("macie/update-automated-discovery-disabled.json"))
    stubber.assert_no_pending_responses()
    assert (outcome["outcome"], outcome["severity"], outcome["controls"]) == ("flagged", "HIGH", ["Macie.2"])
    assert len(aws.alerts()) == 1


# --- ML Warden's own rules, functions and roles ------------------------------------------------------------


def _own_rule(aws: AwsWorld, *, state: str = "ENABLED", target: bool = True) -> Any:
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name=OWN_RULE, EventPattern=json.dumps({"source": ["aws.s3"]}), State=state)
    if target:
        events.put_targets(
            Rule=OWN_RULE,
            Targets=[{"Id": "fn", "Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:mlwarden-BlockPublicS3"}],
        )
    return events


def test_someone_else_disabling_an_own_rule_gets_it_enabled_again_and_a_critical_alert(
    aws: AwsWorld, watch: Callable[..., Handler]
) -> None:
    events = _own_rule(aws, state="DISABLED")
    outcome = watch()(load_sample("eventbridge/disable-rule-own.json"))
    assert events.describe_rule(Name=OWN_RULE)["State"] == "ENABLED"
    assert outcome["outcome"] == "remediated"
    alert = aws.only_alert()
    assert alert.outcome["severity"] == "CRITICAL"
    assert alert.outcome["trigger"]["actor"].startswith(INTRUDER)


def test_the_deploying_principal_disabling_an_own_rule_is_a_deployment(
    aws: AwsWorld, watch: Callable[..., Handler]
) -> None:
    events = _own_rule(aws, state="DISABLED")
    event = _as(load_sample("eventbridge/disable-rule-own.json"), DEPLOYER_SESSION, DEPLOYER_ARN)
    outcome = watch()(event)
    assert outcome["outcome"] == "ignored"
    assert events.describe_rule(Name=OWN_RULE)["State"] == "DISABLED"
    assert aws.alerts() == []


def test_a_deployer_look_alike_is_not_the_deployer(aws: AwsWorld, watch: Callable[..., Handler]) -> None:
    # Attack: a role named like the deployer in another account, or a user whose ARN ends the same way.
    events = _own_rule(aws, state="DISABLED")
    lookalike = "arn:aws:sts::210987654321:assumed-role/MlwardenDeployer/ci"
    event = _as(
        load_sample("eventbridge/disable-rule-own.json"), lookalike, "arn:aws:iam::210987654321:role/MlwardenDeployer"
    )
    watch()(event)
    assert events.describe_rule(Name=OWN_RULE)["State"] == "ENABLED"
    assert aws.only_alert().outcome["severity"] == "CRITICAL"


def test_removing_an_own_rules_targets_is_critical(aws: AwsWorld, watch: Callable[..., Handler]) -> None:
    _own_rule(aws, target=False)
    outcome = watch()(load_sample("eventbridge/remove-targets-own.json"))
    assert outcome["outcome"] == "flagged"
    alert = aws.only_alert()
    assert alert.outcome["severity"] == "CRITICAL"
    assert "no target" in alert.outcome["reason"]


def test_changing_an_own_rules_pattern_is_critical_and_says_the_new_pattern(
    aws: AwsWorld, watch: Callable[..., Handler]
) -> None:
    _own_rule(aws)
    outcome = watch()(load_sample("eventbridge/put-rule-own-pattern.json"))
    assert outcome["outcome"] == "flagged"
    assert "NoSuchCall" in aws.only_alert().outcome["details"]["new_event_pattern"]


def test_deleting_an_own_rule_is_critical(aws: AwsWorld, watch: Callable[..., Handler]) -> None:
    outcome = watch()(load_sample("eventbridge/delete-rule-own.json"))
    assert (outcome["outcome"], outcome["severity"]) == ("flagged", "CRITICAL")
    assert len(aws.alerts()) == 1


def test_someone_elses_rule_is_not_ml_wardens_business(aws: AwsWorld, watch: Callable[..., Handler]) -> None:
    outcome = watch()(load_sample("eventbridge/disable-rule-other.json"))
    assert outcome["outcome"] == "ignored"
    assert aws.alerts() == []


@pytest.mark.parametrize(
    "sample",
    [
        "lambda/update-function-code-own.json",
        "lambda/update-function-configuration-own.json",
        "lambda/delete-function-own.json",
        "lambda/remove-permission-own.json",
        "lambda/put-function-concurrency-zero-own.json",
    ],
)
def test_someone_else_changing_an_own_function_is_critical(
    aws: AwsWorld, watch: Callable[..., Handler], sample: str
) -> None:
    outcome = watch()(load_sample(sample))
    assert (outcome["outcome"], outcome["severity"]) == ("flagged", "CRITICAL")
    alert = aws.only_alert()
    assert alert.outcome["resource"].endswith(":function:mlwarden-BlockPublicS3Function-9Z8Y7X6W5V4U")
    # Names of what changed, never values (environment variables may hold secrets).
    assert "HIDDEN_DUE_TO_SECURITY_REASONS" not in alert.body


def test_the_deployer_updating_a_function_is_a_deployment(aws: AwsWorld, watch: Callable[..., Handler]) -> None:
    event = _as(load_sample("lambda/update-function-code-own.json"), DEPLOYER_SESSION, DEPLOYER_ARN)
    assert watch()(event)["outcome"] == "ignored"
    assert aws.alerts() == []


def test_someone_else_detaching_a_policy_from_an_own_role_is_critical(
    aws: AwsWorld, watch: Callable[..., Handler]
) -> None:
    outcome = watch()(load_sample("iam/detach-role-policy-own-role.json"))
    assert (outcome["outcome"], outcome["severity"]) == ("flagged", "CRITICAL")
    alert = aws.only_alert()
    assert alert.outcome["details"]["policyArn"].endswith(":policy/mlwarden-permissions-boundary")


def test_without_a_deployer_every_change_of_an_own_resource_is_alerted(
    aws: AwsWorld, watch: Callable[..., Handler]
) -> None:
    event = _as(load_sample("iam/update-assume-role-policy-own-role.json"), DEPLOYER_SESSION, DEPLOYER_ARN)
    assert watch(DEPLOYER_PRINCIPAL_ARN=None)(event)["outcome"] == "flagged"


@pytest.mark.parametrize("region", ["not a region!", "us-east-1\n", "", "x" * 300])
def test_a_damaged_region_ends_ignored_not_in_a_crash(
    aws: AwsWorld, watch: Callable[..., Handler], region: str
) -> None:
    # botocore refuses to build a client for an invalid region name (InvalidRegionError) before any call.
    event = load_sample("cloudtrail/stop-logging.json")
    event["detail"]["awsRegion"] = region
    event["region"] = region
    assert watch()(event)["outcome"] in ("ignored", "compliant")
    assert aws.alerts() == []


@pytest.mark.parametrize(
    "named",
    [
        "mlwarden-BlockPublicS3Function-9Z8Y7X6W5V4U",
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:mlwarden-BlockPublicS3Function-9Z8Y7X6W5V4U",
        f"{ACCOUNT}:function:mlwarden-BlockPublicS3Function-9Z8Y7X6W5V4U",  # a partial ARN, as Lambda accepts
        "mlwarden-BlockPublicS3Function-9Z8Y7X6W5V4U:$LATEST",
    ],
)
def test_every_way_lambda_accepts_to_name_an_own_function_is_recognised(
    aws: AwsWorld, watch: Callable[..., Handler], named: str
) -> None:
    # Attack: name the function by partial ARN or with a qualifier so it does not look like one of ours.
    event = load_sample("lambda/update-function-code-own.json")
    event["detail"]["requestParameters"]["functionName"] = named
    assert watch()(event)["outcome"] == "flagged"
    assert aws.only_alert().outcome["resource"].endswith(":function:mlwarden-BlockPublicS3Function-9Z8Y7X6W5V4U")


@pytest.mark.parametrize("bus", ["default", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"])
def test_naming_the_default_bus_does_not_hide_a_disabled_own_rule(
    aws: AwsWorld, watch: Callable[..., Handler], bus: str
) -> None:
    events = _own_rule(aws, state="DISABLED")
    event = load_sample("eventbridge/disable-rule-own.json")
    event["detail"]["requestParameters"]["eventBusName"] = bus
    watch()(event)
    assert events.describe_rule(Name=OWN_RULE)["State"] == "ENABLED"


def test_a_rule_with_an_own_looking_name_on_another_bus_is_not_ml_wardens(
    aws: AwsWorld, watch: Callable[..., Handler]
) -> None:
    event = load_sample("eventbridge/disable-rule-own.json")
    event["detail"]["requestParameters"]["eventBusName"] = "team-bus"
    assert watch()(event)["outcome"] == "ignored"
    assert aws.alerts() == []
