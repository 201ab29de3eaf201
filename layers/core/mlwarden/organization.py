"""The AWS Organization ML Warden guards in organization mode: its member accounts, their names and OUs.

The hub (the security or delegated-administrator account) reads Organizations with its own credentials:
`member_accounts` lists the accounts the sweep covers, `labelled` puts an account's name and OU on an
alert. Organizations is a global service answered in the management account's home region; boto3's
default endpoint reaches it from any region.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients
from mlwarden.errors import AwsCallFailed
from mlwarden.observability import logger
from mlwarden.outcomes import Trigger

# Naming an account on an alert (organization mode only).
LABEL_PERMISSIONS = frozenset(
    {"organizations:DescribeAccount", "organizations:ListParents", "organizations:DescribeOrganizationalUnit"}
)
# Listing the accounts of the configured OUs for the sweep, nested OUs included.
LIST_PERMISSIONS = frozenset(
    {
        "organizations:ListAccountsForParent",
        "organizations:ListOrganizationalUnitsForParent",
        "organizations:DescribeOrganizationalUnit",
    }
)


@dataclass(frozen=True)
class Account:
    """A member account: its id, and its name and OU when Organizations told us."""

    id: str
    name: str | None = None
    organizational_unit: str | None = None


def labelled(trigger: Trigger) -> Trigger:
    """The trigger with its account's name and OU, when Organizations answers; unchanged otherwise."""
    if not trigger.account or trigger.account_name:
        return trigger
    account = describe(trigger.account)
    if account is None:
        return trigger
    return replace(trigger, account_name=account.name, organizational_unit=account.organizational_unit)


@functools.lru_cache(maxsize=1024)
def describe(account_id: str) -> Account | None:
    """An account's name and OU (read once per account per container); None when Organizations refuses.

    The name is a courtesy on an alert that names the account id anyway: a refused or failed read is
    logged and the alert goes out without it, never held back for it.
    """
    organizations = clients.client("organizations")
    try:
        name = organizations.describe_account(AccountId=account_id)["Account"].get("Name")
        parents = organizations.list_parents(ChildId=account_id).get("Parents", [])
        unit = None
        if parents and parents[0].get("Type") == "ORGANIZATIONAL_UNIT":
            unit_id = parents[0]["Id"]
            described = organizations.describe_organizational_unit(OrganizationalUnitId=unit_id)
            unit = f"{described['OrganizationalUnit'].get('Name', '')} ({unit_id})"
        elif parents:
            unit = f"Root ({parents[0]['Id']})"
    except (ClientError, BotoCoreError) as err:
        failed = AwsCallFailed.from_error("organizations:DescribeAccount", err)
        logger.warning("account name and OU not read: the alert names the account id only", error=failed.code)
        return None
    return Account(account_id, name, unit)


def member_accounts(parents: Iterable[str]) -> list[Account]:
    """Every active account under the given OUs or roots (nested OUs included), each once, in listing order.

    AwsCallFailed when Organizations cannot be read: the caller cannot know which accounts it missed.
    """
    seen: dict[str, Account] = {}
    for parent in parents:
        for account in _accounts_under(parent):
            seen.setdefault(account.id, account)
    return list(seen.values())


def _accounts_under(parent: str) -> Iterator[Account]:
    organizations = clients.client("organizations")
    unit_name = _unit_name(parent)
    try:
        for page in organizations.get_paginator("list_accounts_for_parent").paginate(ParentId=parent):
            for account in page.get("Accounts", []):
                # Suspended and closing accounts cannot be acted in; State replaces the older Status field.
                if (account.get("State") or account.get("Status")) == "ACTIVE":
                    yield Account(account["Id"], account.get("Name"), unit_name)
        children = [
            unit["Id"]
            for page in organizations.get_paginator("list_organizational_units_for_parent").paginate(ParentId=parent)
            for unit in page.get("OrganizationalUnits", [])
        ]
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error("organizations:ListAccountsForParent", err) from err
    for child in children:
        yield from _accounts_under(child)


def _unit_name(parent: str) -> str:
    if parent.startswith("ou-"):
        try:
            described = clients.client("organizations").describe_organizational_unit(OrganizationalUnitId=parent)
        except (ClientError, BotoCoreError) as err:
            raise AwsCallFailed.from_error("organizations:DescribeOrganizationalUnit", err) from err
        return f"{described['OrganizationalUnit'].get('Name', '')} ({parent})"
    return f"Root ({parent})"
