"""The one way ML Warden reaches AWS.

Clients are cached per (service, region), use botocore's standard retry mode and
honour the standard AWS_ENDPOINT_URL, so the same code runs against AWS, moto
server and `sam local invoke`.

Organization mode: inside `acting_in(account, region, ...)` the clients of the resource services
(S3, IAM, SageMaker, ...) are the member account's, made from assuming its member role once per
account, region and session (one event, one sweep); the clients of ML Warden's own state and alerts
(HOME_SERVICES: DynamoDB tables, the SNS topic, queues, STS) stay the home account's. Outside it, and
for the home account itself, every client is the function's own.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import __version__
from mlwarden.errors import AwsCallFailed

_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    user_agent_extra=f"mlwarden/{__version__}",
    connect_timeout=5,
    read_timeout=20,
)


# ML Warden's own state and alerts live in the home account whichever account a check acts in.
HOME_SERVICES = frozenset({"dynamodb", "sns", "sqs", "sts", "organizations", "logs", "cloudwatch"})
MEMBER_ROLE_PERMISSIONS = frozenset({"sts:AssumeRole", "sts:SetSourceIdentity"})
# Every session ML Warden opens in a member account is named, and carries the source identity, with this
# prefix: the member role's trust requires both, so CloudTrail in the member account shows who acted.
SESSION_PREFIX = "mlwarden-"
SOURCE_IDENTITY = "mlwarden"
_SESSION_NAME_UNSAFE = re.compile(r"[^\w+=,.@-]")
_SESSION_NAME_MAX = 64


def client(service: str, region: str | None = None) -> Any:
    """A botocore client (typed Any: each service's methods are generated at run time).

    Inside `acting_in`, a resource service's client acts in that account and (when no region is given)
    that region; everything else is the function's own.
    """
    acting = _ACTING.get()
    if acting is None or service in HOME_SERVICES:
        return _home_client(service, region)
    if acting.role_arn is None:  # the home account, in the event's region
        return _home_client(service, region or acting.region)
    return _member_client(service, region or acting.region, acting.role_arn, acting.session_name)


def _clear_caches() -> None:
    _home_client.cache_clear()
    _member_session.cache_clear()
    _member_client.cache_clear()
    _caller_account.cache_clear()


# Tests and long-lived tools reset every cached client and session at once.
client.cache_clear = _clear_caches  # type: ignore[attr-defined]


def _config() -> Config:
    config = _CONFIG
    if os.environ.get("AWS_ENDPOINT_URL") == "":
        # template.yaml declares AWS_ENDPOINT_URL empty so `sam local invoke --env-vars` can set it;
        # empty means "the real AWS endpoints" on every botocore version.
        config = config.merge(Config(ignore_configured_endpoint_urls=True))
    return config


@functools.cache
def _home_client(service: str, region: str | None) -> Any:
    aws_client = boto3.client(service, region_name=region, config=_config())
    if service == "s3control":
        _keep_custom_endpoint_host(aws_client)
    return aws_client


# --- organization mode: acting in a member account ------------------------------------------------------


@dataclass(frozen=True)
class Acting:
    """The account (and its region) the current event or sweep acts in, through which role (None: our own)."""

    account: str
    region: str | None
    role_arn: str | None
    session_name: str


_ACTING: contextvars.ContextVar[Acting | None] = contextvars.ContextVar("mlwarden_acting", default=None)


class MemberRoleUnavailable(AwsCallFailed):
    """The member role of an account could not be assumed (missing, not trusting us, STS refused)."""

    def __init__(self, account: str, role_arn: str, code: str, message: str) -> None:
        super().__init__("sts:AssumeRole", code, message)
        self.account = account
        self.role_arn = role_arn

    @property
    def explanation(self) -> str:
        return (
            f"cannot act in account {self.account}: assuming {self.role_arn} failed with {self.code} "
            "(is the member stack deployed there, and does its role trust this function's role?)"
        )


def home_account(lambda_context: Any = None) -> str:
    """The account this process acts as itself: in Lambda the function's own ARN says it (no call);
    elsewhere (replay, the CLI) the account of the credentials it runs with, read once."""
    function_arn = getattr(lambda_context, "invoked_function_arn", None)
    in_lambda = os.environ.get("AWS_EXECUTION_ENV", "").startswith("AWS_Lambda_")
    if in_lambda and isinstance(function_arn, str) and function_arn.count(":") >= 6:
        return function_arn.split(":")[4]
    return _caller_account()


@functools.cache
def _caller_account() -> str:
    try:
        return str(_home_client("sts", None).get_caller_identity()["Account"])
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error("sts:GetCallerIdentity", err) from err


def member_role_arn(account: str, role_name: str, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account}:role/{role_name}"


def session_name(*parts: str) -> str:
    """A role session name that says ML Warden and what it acts for (a check and an event or sweep id)."""
    name = SESSION_PREFIX + "-".join(part for part in parts if part)
    return _SESSION_NAME_UNSAFE.sub("-", name)[:_SESSION_NAME_MAX]


@contextlib.contextmanager
def acting_in(
    account: str | None,
    region: str | None,
    *,
    member_role_name: str | None,
    session: str,
    partition: str = "aws",
    lambda_context: Any = None,
) -> Iterator[Acting | None]:
    """Resource clients act in `account` and `region` while inside; a no-op without an account or a member role.

    The role is assumed on entry, so a missing or untrusting member role is MemberRoleUnavailable here,
    before anything is read, and not an AccessDenied on the first resource call.
    """
    acting = _assumed(account, region, member_role_name, session, partition, lambda_context=lambda_context)
    if acting is None:
        yield None
        return
    token = _ACTING.set(acting)
    try:
        yield acting
    finally:
        _ACTING.reset(token)


def context_acting_in(
    account: str, region: str | None, *, member_role_name: str | None, session: str, partition: str = "aws"
) -> contextvars.Context:
    """A copy of the current context in which resource clients act in `account` (for work that yields, such
    as the sweep's generators: `context.run` each step, and nothing leaks into the caller between steps)."""
    acting = _assumed(account, region, member_role_name, session, partition)
    context = contextvars.copy_context()
    context.run(_ACTING.set, acting)
    return context


def _assumed(
    account: str | None,
    region: str | None,
    member_role_name: str | None,
    session: str,
    partition: str,
    *,
    lambda_context: Any = None,
) -> Acting | None:
    if not account or not member_role_name:
        return None  # single-account mode: as before organization mode existed
    if account == home_account(lambda_context):
        # The hub's own account, but maybe another region (member.yaml forwards the hub account's other regions).
        return Acting(account, region, None, session)
    role_arn = member_role_arn(account, member_role_name, partition)
    _member_session(role_arn, session)
    return Acting(account, region, role_arn, session)


# A warm container meets a new session per event; a sweep keeps one per account. A few are plenty.
@functools.lru_cache(maxsize=8)
def _member_session(role_arn: str, session: str) -> boto3.Session:
    """One assumed-role session per role and session name, refreshed by botocore before it expires."""
    from botocore.credentials import RefreshableCredentials  # noqa: PLC0415 - organization mode only
    from botocore.session import get_session  # noqa: PLC0415

    account = role_arn.split(":")[4]

    def assume() -> dict[str, str]:
        try:
            response = _home_client("sts", None).assume_role(
                RoleArn=role_arn, RoleSessionName=session, SourceIdentity=SOURCE_IDENTITY
            )
        except (ClientError, BotoCoreError) as err:
            failed = AwsCallFailed.from_error("sts:AssumeRole", err)
            raise MemberRoleUnavailable(account, role_arn, failed.code, failed.message) from err
        credentials = response["Credentials"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": credentials["Expiration"].isoformat(),
        }

    botocore_session = get_session()
    # One loader for every member session: a new session would parse the service models again (time, memory).
    botocore_session.register_component("data_loader", _shared_loader())
    # botocore has no public setter for refreshable credentials; this is how AWS's own samples give them.
    botocore_session._credentials = RefreshableCredentials.create_from_metadata(
        metadata=assume(), refresh_using=assume, method="sts-assume-role"
    )
    return boto3.Session(botocore_session=botocore_session)


@functools.cache
def _shared_loader() -> Any:
    from botocore.loaders import create_loader  # noqa: PLC0415 - organization mode only

    return create_loader()


# boto3 sessions are not thread-safe: the sweep's threads make a member's clients one at a time.
_MAKING_CLIENTS = threading.Lock()


@functools.lru_cache(maxsize=64)
def _member_client(service: str, region: str | None, role_arn: str, session: str) -> Any:
    with _MAKING_CLIENTS:
        aws_client = _member_session(role_arn, session).client(service, region_name=region, config=_config())
    if service == "s3control":
        _keep_custom_endpoint_host(aws_client)
    return aws_client


def _keep_custom_endpoint_host(s3control: BaseClient) -> None:
    """S3 Control puts the account id in front of the host (ACCOUNT.s3-control...).

    Against a custom endpoint such as http://127.0.0.1:5000 that becomes an
    unresolvable name; drop the prefix again before the request is signed.
    Real AWS endpoints are left untouched.
    """
    endpoint = s3control.meta.endpoint_url
    default_host = f"s3-control.{s3control.meta.region_name}.amazonaws.com"
    custom_netloc = urlsplit(endpoint).netloc
    if not custom_netloc or custom_netloc.endswith(default_host) or "amazonaws.com" in custom_netloc:
        return

    def strip_account_prefix(request: Any, **_: Any) -> None:
        parts = urlsplit(request.url)
        if parts.netloc != custom_netloc and parts.netloc.endswith("." + custom_netloc):
            request.url = urlunsplit(parts._replace(netloc=custom_netloc))

    s3control.meta.events.register("before-sign.s3-control", strip_account_prefix)
