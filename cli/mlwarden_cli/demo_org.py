"""The demo's organization part: the hub and member accounts on the same moto server.

moto keys its state by account id and lets a caller assume a role ARN in another account, so the hub's
handlers (replayed in this process, as in the rest of the demo) act in a member account as they would in
AWS: through its member role. Member ml-team-a has an event replayed through the hub's patterns;
ml-team-b is only found by the sweep; ml-team-c has no member role and is reported.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from pathlib import Path
from typing import Any

import boto3

from mlwarden_cli.emulator import refuse_assuming_missing_roles
from mlwarden_cli.replay import Replayer
from mlwarden_cli.template import DEFAULT_ACCOUNT

MEMBER_ROLE = "MLWardenMember"
TEAM_A, TEAM_B, TEAM_C = "111111111111", "222222222222", "333333333333"
TEAM_A_BUCKET, TEAM_B_BUCKET, TEAM_C_BUCKET = "team-a-features", "team-b-scratch", "team-c-exports"
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}


def _in_account(account: str, service: str) -> Any:
    """A demo client in `account` (assumed-role credentials: moto maps them to the role's account)."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    sts = boto3.client("sts", endpoint_url=endpoint)
    credentials = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/Admin", RoleSessionName="demo-admin")
    return boto3.client(
        service,
        endpoint_url=endpoint,
        aws_access_key_id=credentials["Credentials"]["AccessKeyId"],
        aws_secret_access_key=credentials["Credentials"]["SecretAccessKey"],
        aws_session_token=credentials["Credentials"]["SessionToken"],
    )


def _block_of(account: str, bucket: str) -> dict[str, bool] | None:
    s3 = _in_account(account, "s3")
    try:
        return dict(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"])
    except s3.exceptions.ClientError:
        return None


def _member_event(events_dir: Path, account: str, bucket: str) -> dict[str, Any]:
    """The repository's DeleteBucketPublicAccessBlock sample, as member `account` would forward it."""
    event: dict[str, Any] = json.loads((events_dir / "s3/delete-bucket-public-access-block.json").read_text())
    text = json.dumps(event).replace(DEFAULT_ACCOUNT, account).replace("mlw-feature-store", bucket)
    member = copy.deepcopy(json.loads(text))
    member["id"] = str(uuid.uuid4())
    return dict(member)


def run(replayer: Replayer, events_dir: Path, queue_url: str) -> list[tuple[str, bool]]:
    """Create the members, replay a member's event, sweep the organization; the checks it passed or not."""
    from mlwarden import clients  # noqa: PLC0415 - after AWS_ENDPOINT_URL points at the emulator
    from mlwarden.organization import Account  # noqa: PLC0415
    from mlwarden.settings import load_settings  # noqa: PLC0415
    from mlwarden.sweep import Summary, new_sweep_id, run_organization_sweep  # noqa: PLC0415

    print("members: ml-team-a and ml-team-b deployed member.yaml (role MLWardenMember);")
    print("         ml-team-c did not. Each has a bucket without its public-access block.")
    for account in (TEAM_A, TEAM_B):
        _in_account(account, "iam").create_role(RoleName=MEMBER_ROLE, AssumeRolePolicyDocument="{}")
    for account, bucket in ((TEAM_A, TEAM_A_BUCKET), (TEAM_B, TEAM_B_BUCKET), (TEAM_C, TEAM_C_BUCKET)):
        _in_account(account, "s3").create_bucket(Bucket=bucket)
    refuse_assuming_missing_roles(clients.client("sts"))
    os.environ["MEMBER_ROLE_NAME"] = MEMBER_ROLE

    print(f"\n1. ml-team-a's DeleteBucketPublicAccessBlock arrives on the hub bus (account {TEAM_A})")
    [replayed] = replayer.replay(_member_event(events_dir, TEAM_A, TEAM_A_BUCKET), "ml-team-a event")
    print(f"   {replayed.function}: {replayed.outcome}")

    print("\n2. the sweep covers the hub and the three members")
    summary = Summary(new_sweep_id())
    accounts = [Account(DEFAULT_ACCOUNT, "hub"), Account(TEAM_A, "ml-team-a"), Account(TEAM_B, "ml-team-b")]
    accounts.append(Account(TEAM_C, "ml-team-c"))
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    outcomes = list(run_organization_sweep(["block_public_s3"], [region], accounts, load_settings(), summary=summary))
    print(f"   {summary.evaluated} evaluated: {dict(summary.by_outcome)}; unreachable: {summary.unreachable_accounts}")

    sqs = clients.client("sqs")
    alerts = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            alerts.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    accounts_alerted = sorted({a.get("MessageAttributes", {}).get("account", {}).get("Value", "") for a in alerts})
    print(f"   alerts: {len(alerts)}, accounts named: {', '.join(accounts_alerted)}")
    unreachable_alerts = [a for a in alerts if TEAM_C in a.get("Message", "") and "not swept" in a.get("Message", "")]
    team_a_fixed = (replayed.outcome, _block_of(TEAM_A, TEAM_A_BUCKET)) == ("remediated", ALL_ON)
    team_c_reported = summary.unreachable_accounts == [f"{TEAM_C}: AccessDenied"] and len(unreachable_alerts) == 1
    swept = {outcome.trigger.account for outcome in outcomes}
    return [
        ("ml-team-a's event is fixed in ml-team-a", team_a_fixed),
        ("ml-team-b's bucket is fixed by the sweep", _block_of(TEAM_B, TEAM_B_BUCKET) == ALL_ON),
        ("ml-team-c (no member role) is left as it is", _block_of(TEAM_C, TEAM_C_BUCKET) is None),
        ("ml-team-c is reported unreachable, in one alert", team_c_reported),
        ("the sweep evaluated all three reachable accounts", swept >= {DEFAULT_ACCOUNT, TEAM_A, TEAM_B}),
        ("alerts name the member accounts", {TEAM_A, TEAM_B} <= set(accounts_alerted)),
    ]
