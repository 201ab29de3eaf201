"""Monthly cost of organization mode, from AWS's public us-east-1 prices: `python tools/organization_cost.py`.

Prints the README's table. Change the assumptions below to your organization's volumes; every price is
a public list price (arm64 Lambda, DynamoDB on-demand, SNS standard, KMS, CloudWatch, EventBridge).
"""

from __future__ import annotations

# --- assumptions: per member account per month ---------------------------------------------------------
EVENTS_PER_ACCOUNT = 5_000  # matched events (bucket policy/ACL/block changes, SageMaker jobs, IAM policies, findings)
ALERTED_SHARE = 0.05  # events that end in an alert
LAMBDA_SECONDS = 0.4  # average warm invocation, an AssumeRole per event included
LAMBDA_GB = 0.25  # 256 MB
DYNAMODB_WRITES_PER_EVENT = 3  # idempotency record (claim, result), dedup / flap counters
DYNAMODB_READS_PER_EVENT = 2  # exemption registry scan (small table), stored outcome
LOG_KB_PER_EVENT = 2.0
ALARMS = 17  # CloudWatch alarms in template.yaml

# --- public prices (USD) -----------------------------------------------------------------------------------
EVENTBRIDGE_CROSS_ACCOUNT_PER_MILLION = 1.00  # events delivered to another account's bus; AWS service events free
LAMBDA_REQUEST_PER_MILLION = 0.20
LAMBDA_ARM_GB_SECOND = 0.0000133334
DYNAMODB_WRITE_PER_MILLION = 0.625
DYNAMODB_READ_PER_MILLION = 0.125
SNS_PUBLISH_PER_MILLION = 0.50
SNS_EMAIL_PER_100K = 2.00
LOGS_INGEST_PER_GB = 0.50
KMS_KEY_MONTH = 1.00
ALARM_MONTH = 0.10


def hub_per_account() -> float:
    events = EVENTS_PER_ACCOUNT
    alerts = events * ALERTED_SHARE
    return (
        events * LAMBDA_REQUEST_PER_MILLION / 1e6
        + events * LAMBDA_SECONDS * LAMBDA_GB * LAMBDA_ARM_GB_SECOND
        + events * DYNAMODB_WRITES_PER_EVENT * DYNAMODB_WRITE_PER_MILLION / 1e6
        + events * DYNAMODB_READS_PER_EVENT * DYNAMODB_READ_PER_MILLION / 1e6
        + alerts * SNS_PUBLISH_PER_MILLION / 1e6
        + alerts * SNS_EMAIL_PER_100K / 1e5
        + events * LOG_KB_PER_EVENT / 1e6 * LOGS_INGEST_PER_GB
    )


def hub_fixed() -> float:
    return KMS_KEY_MONTH + ALARMS * ALARM_MONTH


def member() -> float:
    """Rules and a role cost nothing; forwarding is billed as cross-account events."""
    return EVENTS_PER_ACCOUNT * EVENTBRIDGE_CROSS_ACCOUNT_PER_MILLION / 1e6


def one_stack_per_account(accounts: int, regions: int) -> float:
    """The alternative: a full stack (own key, own alarms) in every account and region."""
    return accounts * (regions * hub_fixed() + hub_per_account())


def main() -> None:
    print("| accounts | hub per month | each member per month | all members | total | a stack per account, 2 regions |")
    print("|---:|---:|---:|---:|---:|---:|")
    for accounts in (10, 100, 1_000):
        hub = hub_fixed() + accounts * hub_per_account()
        members = accounts * member()
        print(
            f"| {accounts:,} | ${hub:,.2f} | ${member():.3f} | ${members:,.2f} | ${hub + members:,.2f} "
            f"| ${one_stack_per_account(accounts, 2):,.2f} |"
        )


if __name__ == "__main__":
    main()
