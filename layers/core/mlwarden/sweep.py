"""Evaluate what already exists: every resource each check can list, through the event path's pipeline.

`sweep_check` lists one check's targets in one account and region (its `targets_from_inventory`), reads
their tags in bulk when the check says how, and runs each through `pipeline.run_target` on the
inventory's threads: the same decision, exemptions, dry-run, flap guard, record and per-resource alert
dedup as an event about the same resource. A resource that fails (an AWS call refused, a fix that does
not read back) is reported as a `failed` outcome and the sweep goes on; a resource deleted between the
listing and its evaluation ends `ignored`.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from mlwarden import alerts, clients
from mlwarden import inventory as inventory_module
from mlwarden.checks import CheckUnit
from mlwarden.errors import AlertDeliveryFailed, AwsCallFailed, FindingsNotSent, RemediationFailed
from mlwarden.events import partition_of
from mlwarden.inventory import Inventory
from mlwarden.observability import logger
from mlwarden.organization import Account
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger, call_failed
from mlwarden.pipeline import run_target, send_security_hub_findings
from mlwarden.settings import Settings, SettingsError

Progress = Callable[[str, int, int], None]  # check, done, total


def new_sweep_id() -> str:
    return f"sweep-{uuid.uuid4()}"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Summary:
    """What one sweep found: counts by check, outcome and severity, resources evaluated, time taken."""

    sweep_id: str
    started: float = field(default_factory=time.monotonic)
    evaluated: int = 0
    by_check: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    by_severity: Counter[str] = field(default_factory=Counter)
    # Alerts sent by this sweep: anything new (per-resource dedup holds back what was already said).
    alerted: int = 0
    listing_failures: list[str] = field(default_factory=list)
    # Security Hub findings the sweep could not send (with SECURITY_HUB_FINDINGS=true): id and error each.
    findings_not_sent: list[str] = field(default_factory=list)
    # Organization sweep: accounts whose member role could not be assumed ("ACCOUNT: CODE"), skipped.
    unreachable_accounts: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.evaluated += 1
        self.by_check[outcome.check] += 1
        self.by_outcome[outcome.outcome.value] += 1
        if outcome.outcome not in (OutcomeKind.COMPLIANT, OutcomeKind.IGNORED):
            self.by_severity[outcome.severity.value] += 1
        self.alerted += int(outcome.alerted)

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep_id,
            "evaluated": self.evaluated,
            "seconds": self.seconds,
            "by_check": dict(self.by_check),
            "by_outcome": dict(self.by_outcome),
            "by_severity": dict(self.by_severity),
            "alerted": self.alerted,
            "listing_failures": list(self.listing_failures),
            "findings_not_sent": list(self.findings_not_sent),
            "unreachable_accounts": list(self.unreachable_accounts),
        }


def list_targets(unit: CheckUnit, inventory: Inventory) -> list[Any]:
    """Every target of one check in one account and region; AwsCallFailed when the listing cannot be read."""
    return list(unit.targets_from_inventory(inventory))


def evaluate_targets(
    unit: CheckUnit,
    targets: Iterable[Any],
    inventory: Inventory,
    *,
    settings: Settings,
    trigger: Trigger,
    progress: Progress | None = None,
) -> Iterator[Outcome]:
    """Each target through the pipeline, concurrently, in listing order; failures are outcomes, not raises."""
    targets = list(targets)
    token = None
    if unit.known_tags is not None and targets:
        try:
            token = inventory_module.with_known_tags(unit.known_tags(inventory, targets))
        except AwsCallFailed as err:
            # The bulk read is a saving, not a source of truth: each resource reads its own tags instead.
            logger.warning("bulk tag read failed: tags read per resource", check=unit.name, error=err.code)
    done = 0
    try:
        for outcome in inventory.map(lambda target: evaluate_one(unit, target, settings, trigger), targets):
            done += 1
            if progress is not None:
                progress(unit.name, done, len(targets))
            yield outcome
    finally:
        if token is not None:
            inventory_module.forget_known_tags(token)


def evaluate_one(unit: CheckUnit, target: Any, settings: Settings, trigger: Trigger) -> Outcome:
    """One target through the pipeline. A failed fix or an undelivered alert is returned, not raised."""
    try:
        return run_target(unit, target, trigger, settings)
    except RemediationFailed as err:
        return err.outcome
    except AlertDeliveryFailed as err:
        return err.outcome
    except AwsCallFailed as err:  # a check that let one escape: still this resource's outcome
        return call_failed(unit.name, trigger, unit.resource_of(target), "could not evaluate", err)


def sweep_check(
    unit: CheckUnit,
    inventory: Inventory,
    settings: Settings,
    sweep_id: str,
    *,
    summary: Summary | None = None,
    progress: Progress | None = None,
) -> Iterator[Outcome]:
    """List and evaluate one check's resources in one account and region."""
    trigger = Trigger.sweep(sweep_id, inventory.account, inventory.region, now_iso())
    try:
        targets = list_targets(unit, inventory)
    except AwsCallFailed as err:
        failed = listing_failed(unit, trigger, err)
        if summary is not None:
            summary.listing_failures.append(f"{unit.name} in {inventory.region}: {err.code}")
            summary.add(failed)
        yield failed
        return
    if progress is not None:
        progress(unit.name, 0, len(targets))
    unsent: list[Outcome] = []
    for outcome in evaluate_targets(unit, targets, inventory, settings=settings, trigger=trigger, progress=progress):
        if summary is not None:
            summary.add(outcome)
        if settings.security_hub_findings:
            unsent.append(outcome)
            if len(unsent) == FINDINGS_BATCH:
                _send_findings(unsent, settings, summary)
                unsent = []
        yield outcome
    if unsent:
        _send_findings(unsent, settings, summary)


# Outcomes per Security Hub round (securityhub.py splits imports further by the 240 KB limit).
FINDINGS_BATCH = 100


def _send_findings(outcomes: list[Outcome], settings: Settings, summary: Summary | None) -> None:
    """A batch of the sweep's outcomes as Security Hub findings; what is not taken is reported, the sweep goes on."""
    try:
        send_security_hub_findings(outcomes, settings)
    except FindingsNotSent as err:
        if summary is not None:
            summary.findings_not_sent.extend(err.not_sent)


def listing_failed(unit: CheckUnit, trigger: Trigger, err: AwsCallFailed) -> Outcome:
    """A check whose resources could not be listed: nothing about them is known, which is itself a finding."""
    outcome = call_failed(
        unit.name, trigger, f"{trigger.account}/{trigger.region}", f"could not list the {unit.name} resources", err
    )
    return Outcome(**{**outcome.__dict__, "severity": Severity.HIGH})


def run_sweep(
    check_names: Iterable[str],
    regions: Iterable[str],
    account: str,
    settings: Settings,
    *,
    sweep_id: str | None = None,
    progress: Progress | None = None,
    summary: Summary | None = None,
) -> Iterator[Outcome]:
    """Every named check in every region of one account; global resources are listed in the first region only.

    Outcomes stream as they are decided; `summary` (when given) counts them.
    """
    from mlwarden.checks import load  # noqa: PLC0415 - imports the checks, which a handler never needs

    sweep_id = sweep_id or (summary.sweep_id if summary is not None else new_sweep_id())
    units = [load(name) for name in check_names]
    for index, region in enumerate(regions):
        inventory = Inventory(account=account, region=region, first_region=index == 0)
        for unit in units:
            yield from sweep_check(unit, inventory, settings, sweep_id, summary=summary, progress=progress)


# --- organization mode: every member account ---------------------------------------------------------------


def run_organization_sweep(
    check_names: Iterable[str],
    regions: Iterable[str],
    accounts: Iterable[Account],
    settings: Settings,
    *,
    sweep_id: str | None = None,
    progress: Progress | None = None,
    summary: Summary | None = None,
) -> Iterator[Outcome]:
    """`run_sweep` in every account, each through its member role (the home account with its own credentials).

    An account whose role cannot be assumed (missing, not trusting the hub, STS refused) is one `failed`
    outcome and is skipped; the others go on. When any was skipped, one alert says which (not one per account).
    """
    from mlwarden.checks import load  # noqa: PLC0415 - imports the checks, which a handler never needs

    if settings.member_role_name is None:
        # Without it every account would be read with the hub's own credentials, and reported as another's.
        raise SettingsError("MEMBER_ROLE_NAME is required to sweep the organization's accounts")
    summary = summary if summary is not None else Summary(sweep_id or new_sweep_id())
    sweep_id = sweep_id or summary.sweep_id
    units = [load(name) for name in check_names]
    regions = list(regions)
    unreachable: list[Outcome] = []
    for account in accounts:
        for index, region in enumerate(regions):
            try:
                context = clients.context_acting_in(
                    account.id,
                    region,
                    member_role_name=settings.member_role_name,
                    session=clients.session_name(sweep_id),
                    partition=partition_of(region),
                )
            except clients.MemberRoleUnavailable as err:
                outcome = _account_unreachable(account, region, sweep_id, err)
                summary.unreachable_accounts.append(f"{account.id}: {err.code}")
                summary.add(outcome)
                unreachable.append(outcome)
                yield outcome
                break  # the same role in the other regions: skip the account, not only this region
            inventory = Inventory(account=account.id, region=region, first_region=index == 0)
            for unit in units:
                steps = sweep_check(unit, inventory, settings, sweep_id, summary=summary, progress=progress)
                yield from _each_in(context, steps)
    if unreachable:
        _alert_unreachable(unreachable, summary, settings)


def _each_in(context: contextvars.Context, steps: Iterator[Outcome]) -> Iterator[Outcome]:
    """Run each step of a generator in `context` (a member account's), so nothing leaks into the caller's."""
    while True:
        try:
            outcome = context.run(next, steps)
        except StopIteration:
            return
        yield outcome


def _account_unreachable(account: Account, region: str, sweep_id: str, err: AwsCallFailed) -> Outcome:
    trigger = replace(
        Trigger.sweep(sweep_id, account.id, region, now_iso()),
        account_name=account.name,
        organizational_unit=account.organizational_unit,
    )
    return call_failed("sweep", trigger, f"account {account.id}", "account not swept", err)  # HIGH


def _alert_unreachable(unreachable: list[Outcome], summary: Summary, settings: Settings) -> None:
    """One alert for every account the sweep could not enter."""
    first = unreachable[0]
    accounts = ", ".join(f"{o.trigger.account} ({o.error_code})" for o in unreachable)
    outcome = replace(
        first,
        resource=f"{len(unreachable)} account(s)",
        reason=(
            f"{len(unreachable)} account(s) not swept, their member role could not be assumed: {accounts}. "
            "Deploy member.yaml there (StackSets, or the management account by hand) and check its trust"
        ),
        trigger=replace(first.trigger, account=None, region=None, account_name=None, organizational_unit=None),
        details={"accounts": [o.trigger.account for o in unreachable], "sweep": summary.sweep_id},
    )
    try:
        alerts.publish(outcome, settings.alert_topic_arn)
    except AwsCallFailed as err:
        raise AlertDeliveryFailed(outcome) from err
    summary.alerted += 1
