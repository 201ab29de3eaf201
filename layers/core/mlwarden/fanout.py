"""The deployed sweep: a planner lists, SQS carries pages of target keys, each check's own function evaluates them.

- Start: EventBridge Scheduler (daily) and the stack's CREATE_COMPLETE event put a start message on the
  plan queue (template.yaml, "deployed sweep").
- Plan (`plan_batch`, the sweep_planner function): each check's `targets_from_inventory` in this account and
  region, as pages of `UNIT.key_of(target)` (at most PAGE_KEYS keys and PAGE_BYTES bytes), sent to that
  check's work queue with SendMessageBatch. The planner only lists. When less than PLANNER_MARGIN_MS of its
  time is left it puts a continuation (the check and the last key sent) on the plan queue and returns; the
  next invocation lists that check again and skips what was sent.
- Evaluate (`run_page_batch`, called by each check's existing function through `pipeline.handle`): the SQS
  event source mapping delivers pages with a maximum concurrency (the limit that protects the account's API
  rate limits); every key becomes a target again and goes through `pipeline.run_target` on the inventory's
  threads: the event path's decision, exemptions, dry-run, flap guard, record and per-resource alert dedup,
  with the role that already has exactly that check's permissions.
- Summary: sweep_progress counts the pages; the invocation that completes the sweep logs the summary, counts
  it as metrics and, when anything new was alerted (or a listing failed), sends it as one alert.

A page whose evaluation failed (a fix that did not read back, an alert that could not be sent) is reported
in `batchItemFailures`: SQS delivers it again and, after the queue's maxReceiveCount, keeps it in the sweep
dead-letter queue (alarmed). A message that is not a page ends `ignored` with a reason and is not retried.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import single_metric
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients
from mlwarden.checks import CHECK_NAMES, CheckUnit, load
from mlwarden.errors import AwsCallFailed
from mlwarden.inventory import Inventory
from mlwarden.observability import NAMESPACE, SERVICE, logger
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger, ignored_at
from mlwarden.settings import Settings
from mlwarden.sweep import evaluate_one, now_iso
from mlwarden.sweep_progress import ProgressStore, SweepCounts

# A page: few enough keys that one worker evaluates it well within the function's timeout (a bucket takes a
# handful of calls, ~10 run at once: 100 buckets take seconds), small enough for one SQS message (256 KiB,
# less the envelope: an IAM policy ARN may be 2 KB long).
PAGE_KEYS = 100
PAGE_BYTES = 200_000
# SendMessageBatch: at most 10 messages and 256 KiB in all.
BATCH_MESSAGES = 10
BATCH_BYTES = 250_000
# The planner stops listing with this much of its time left, and continues in a new invocation.
PLANNER_MARGIN_MS = 60_000
# A worker starts no new page with less time than this left: the page comes back later instead.
WORKER_MARGIN_MS = 20_000
SEND_PERMISSIONS = frozenset({"sqs:SendMessage"})
# What the SQS event source mapping calls with the function's role, on the check's own queue only.
RECEIVE_PERMISSIONS = frozenset({"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"})
SWEEP_CHECK = "sweep"
_SWEEP_ID = re.compile(r"^sweep-[A-Za-z0-9-]{1,100}$")
_START_ID = re.compile(r"^[A-Za-z0-9-]{1,100}$")
# The checks the deployed sweep fans out to: each has a work queue and an event source mapping in template.yaml.
# watch_inputs, guard_s3_data and guard_kms_keys are swept by `mlwarden sweep` until they get theirs.
DEPLOYED_SWEEP_CHECKS = ("block_public_s3", "tag_pii_bucket", "flag_wildcard_iam", "check_sagemaker_encryption")
_QUEUE_URL = re.compile(r"^https?://[A-Za-z0-9.:-]+/\d{12}/[A-Za-z0-9_-]{1,80}$")


# --- the messages ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """Up to PAGE_KEYS targets of one check, as they travel on the check's work queue."""

    sweep_id: str
    check: str
    account: str
    region: str
    page_id: str
    keys: tuple[Mapping[str, Any], ...]

    def body(self) -> str:
        return json.dumps(
            {
                "sweep_id": self.sweep_id,
                "check": self.check,
                "account": self.account,
                "region": self.region,
                "page": self.page_id,
                "keys": list(self.keys),
            },
            separators=(",", ":"),
            sort_keys=True,
        )


class NotAPage(ValueError):
    """A work-queue message that is not a page this function can evaluate; the text says why."""


def page_of(body: str, check: str) -> Page:
    try:
        data = json.loads(body)
    except ValueError as err:
        raise NotAPage("the message is not JSON") from err
    if not isinstance(data, dict):
        raise NotAPage("the message is not a JSON object")
    sweep_id, keys = data.get("sweep_id"), data.get("keys")
    if not isinstance(sweep_id, str) or not _SWEEP_ID.match(sweep_id):
        raise NotAPage("the message has no valid sweep id")
    if data.get("check") != check:
        raise NotAPage(f"the message is not for {check}")
    account, region, page_id = data.get("account"), data.get("region"), data.get("page")
    if not isinstance(account, str) or not re.fullmatch(r"\d{12}", account):
        raise NotAPage("the message has no valid account")
    if not isinstance(region, str) or not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
        raise NotAPage("the message has no valid region")
    if not isinstance(page_id, str) or not re.fullmatch(r"\d{1,9}", page_id):
        raise NotAPage("the message has no valid page id")
    if not isinstance(keys, list) or not keys or len(keys) > PAGE_KEYS or not all(isinstance(k, dict) for k in keys):
        raise NotAPage(f"the message needs 1 to {PAGE_KEYS} target keys")
    return Page(sweep_id, check, account, region, page_id, tuple(keys))


def sweep_id_of_start(data: Mapping[str, Any]) -> str:
    """The sweep id a start message names: derived from the scheduler's execution id or the event id.

    A start delivered twice (Scheduler and SQS deliver at least once) is the same sweep, and counts once.
    """
    start_id = data.get("id")
    if isinstance(start_id, str):
        start_id = start_id.replace(":", "-")  # a scheduled time, 2026-01-01T03:00:00Z
    if not isinstance(start_id, str) or not _START_ID.match(start_id):
        raise NotAPage("the start message has no valid id")
    return f"sweep-{start_id}"


def _record_id(record: Mapping[str, Any]) -> str:
    return str(record.get("messageId", ""))


def _queue_place(record: Mapping[str, Any]) -> tuple[str, str]:
    """The account and region of the queue a record came from (arn:aws:sqs:<region>:<account>:<name>)."""
    parts = str(record.get("eventSourceARN", "")).split(":")
    if len(parts) != 6 or not re.fullmatch(r"\d{12}", parts[4]):
        raise NotAPage("the record names no queue ARN")
    return parts[4], parts[3]


def _remaining_ms(lambda_context: Any) -> int:
    remaining = getattr(lambda_context, "get_remaining_time_in_millis", None)
    return int(remaining()) if callable(remaining) else 900_000


# --- the workers: each check's own function -----------------------------------------------------------------


def run_page_batch(
    unit: CheckUnit, event: Mapping[str, Any], settings: Settings, lambda_context: Any
) -> dict[str, Any]:
    """Evaluate every page of an SQS batch; the response names the messages to deliver again."""
    failures: list[dict[str, str]] = []
    for record in event["Records"]:
        message_id = _record_id(record)
        if _remaining_ms(lambda_context) < WORKER_MARGIN_MS:
            failures.append({"itemIdentifier": message_id})  # not started: it comes back
            continue
        try:
            page = page_of(str(record.get("body", "")), unit.name)
        except NotAPage as err:
            _page_ignored(unit.name, message_id, str(err))
            continue
        try:
            if not evaluate_page(unit, page, settings):
                failures.append({"itemIdentifier": message_id})
        except AwsCallFailed as err:
            logger.error("sweep page failed: delivered again", check=unit.name, page=page.page_id, error=repr(err))
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}


def evaluate_page(unit: CheckUnit, page: Page, settings: Settings) -> bool:
    """Every target of the page through the pipeline, the page counted; False when an outcome failed."""
    trigger = Trigger.sweep(page.sweep_id, page.account, page.region, now_iso())
    inventory = Inventory(account=page.account, region=page.region)

    def evaluate_key(key: Mapping[str, Any]) -> Outcome:
        try:
            target = unit.target_of_key(key)
        except (KeyError, TypeError, ValueError) as err:
            return ignored_at(unit.name, trigger, f"unreadable target key ({type(err).__name__})")
        return evaluate_one(unit, target, settings, trigger)

    counts = SweepCounts(page.sweep_id)
    for outcome in inventory.map(evaluate_key, page.keys):
        counts.add(outcome)
        undelivered = settings.send_alerts and outcome.needs_alert and not outcome.alerted
        if outcome.outcome is not OutcomeKind.FAILED and undelivered:
            counts.failed += 1  # its alert was not delivered: the page comes back and the alert is tried again
    logger.info(
        "sweep page evaluated",
        check=unit.name,
        sweep_id=page.sweep_id,
        page=page.page_id,
        evaluated=counts.evaluated,
        alerted=counts.alerted,
        failed=counts.failed,
    )
    if settings.outcome_table is not None:
        finished = ProgressStore(settings.outcome_table, page.sweep_id, page.region).page_done(page.page_id, counts)
        if finished is not None:
            _finish(finished, page.account, page.region, settings, ProgressStore(settings.outcome_table, page.sweep_id))
    return counts.failed == 0


def _page_ignored(check: str, message_id: str, reason: str) -> None:
    logger.warning("sweep message ignored", check=check, message_id=message_id, reason=reason)
    _sweep_metric("SweepMessageIgnored", MetricUnit.Count, 1)


# --- the planner ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Where the planner sends pages: each check's work queue, and its own queue for continuations."""

    work_queues: Mapping[str, str]
    plan_queue: str


def plan_batch(event: Mapping[str, Any], settings: Settings, plan: Plan, lambda_context: Any) -> dict[str, Any]:
    """Plan every start or continuation message of an SQS batch (the plan queue delivers one at a time)."""
    failures: list[dict[str, str]] = []
    for record in event["Records"]:
        message_id = _record_id(record)
        try:
            account, region = _queue_place(record)
            data = json.loads(str(record.get("body", "")))
            if not isinstance(data, dict):
                raise NotAPage("the message is not a JSON object")
            resume = data.get("resume")
            sweep_id = data.get("sweep_id") if isinstance(resume, dict) else sweep_id_of_start(data)
            if not isinstance(sweep_id, str) or not _SWEEP_ID.match(sweep_id):
                raise NotAPage("the continuation has no valid sweep id")
        except (NotAPage, ValueError) as err:
            _page_ignored("sweep_planner", message_id, str(err) if isinstance(err, NotAPage) else "not JSON")
            continue
        try:
            Planner(
                settings, plan, sweep_id=sweep_id, account=account, region=region, lambda_context=lambda_context
            ).run(resume)
        except AwsCallFailed as err:
            logger.error("sweep planning failed: delivered again", sweep_id=sweep_id, error=err.code)
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}


class Planner:
    """Lists each check's targets and sends them as pages; continues from a token when time runs short."""

    def __init__(
        self, settings: Settings, plan: Plan, *, sweep_id: str, account: str, region: str, lambda_context: Any
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.sweep_id = sweep_id
        self.account = account
        self.region = region
        self.context = lambda_context
        self.progress = (
            ProgressStore(settings.outcome_table, sweep_id, region) if settings.outcome_table is not None else None
        )
        # Pages are numbered across the sweep's checks; a continuation carries the next number.
        self.next_page = 0

    def run(self, resume: Mapping[str, Any] | None) -> None:
        resume = resume or {}
        start_check = resume.get("check") if resume.get("check") in DEPLOYED_SWEEP_CHECKS else None
        after = resume.get("after") if isinstance(resume.get("after"), dict) else None
        self.next_page = resume["page"] if isinstance(resume.get("page"), int) else 0
        failures = resume.get("listing_failures")
        listing_failures = [f for f in failures if isinstance(f, str)] if isinstance(failures, list) else []
        if self.progress is not None and not resume:
            self.progress.start(self.account, self.region)
        names = list(DEPLOYED_SWEEP_CHECKS)
        for name in names[names.index(start_check) :] if start_check else names:
            unit = _unit_or_none(name)
            queue = self.plan.work_queues.get(name)
            if unit is None or queue is None:
                logger.info("check not swept: no inventory or no work queue", check=name)
                continue
            try:
                continuation = self._plan_check(unit, queue, after if name == start_check else None)
            except AwsCallFailed as err:
                # What was sent is swept; the summary says what could not be listed.
                logger.error("sweep listing failed", check=name, sweep_id=self.sweep_id, error=err.code)
                _sweep_metric("SweepListingFailed", MetricUnit.Count, 1)
                listing_failures.append(f"{name} in {self.region}: {err.code}")
                continue
            if continuation is not None:
                self._continue_later(continuation, listing_failures)
                return
        logger.info("sweep planned", sweep_id=self.sweep_id, pages=self.next_page, listing_failures=listing_failures)
        if self.progress is not None:
            finished = self.progress.planning_done(listing_failures)
            if finished is not None:
                _finish(finished, self.account, self.region, self.settings, self.progress)

    def _plan_check(self, unit: CheckUnit, queue: str, after: Mapping[str, Any] | None) -> Continuation | None:
        """Send one check's pages; a Continuation when time ran short before the listing ended."""
        inventory = Inventory(account=self.account, region=self.region, first_region=True)
        batch: list[Page] = []
        for keys in _pages(unit, _after(unit.targets_from_inventory(inventory), unit, after)):
            batch.append(Page(self.sweep_id, unit.name, self.account, self.region, str(self.next_page), tuple(keys)))
            self.next_page += 1
            if len(batch) == BATCH_MESSAGES:
                self._send(queue, batch)
                last_key, batch = batch[-1].keys[-1], []
                if _remaining_ms(self.context) < PLANNER_MARGIN_MS:
                    return Continuation(unit.name, last_key, self.next_page)
        if batch:
            self._send(queue, batch)
        return None

    def _send(self, queue: str, pages: list[Page]) -> None:
        send_pages(queue, pages, self.region)
        if self.progress is not None:
            self.progress.planned(page.page_id for page in pages)

    def _continue_later(self, continuation: Continuation, listing_failures: list[str]) -> None:
        body = {
            "sweep_id": self.sweep_id,
            "resume": {
                "check": continuation.check,
                "after": dict(continuation.after),
                "page": continuation.page,
                "listing_failures": listing_failures,
            },
        }
        try:
            clients.client("sqs", self.region).send_message(QueueUrl=self.plan.plan_queue, MessageBody=json.dumps(body))
        except (ClientError, BotoCoreError) as err:
            raise AwsCallFailed.from_error("sqs:SendMessage", err) from err
        logger.info("sweep planning continues in a new invocation", sweep_id=self.sweep_id, check=continuation.check)


@dataclass(frozen=True)
class Continuation:
    check: str
    after: Mapping[str, Any]
    page: int


def _unit_or_none(name: str) -> CheckUnit | None:
    try:
        return load(name)
    except KeyError:  # a check module without a UNIT yet: it has no inventory to sweep
        return None


def _after(targets: Iterator[Any], unit: CheckUnit, after: Mapping[str, Any] | None) -> Iterator[Any]:
    """The targets listed after the key a continuation names.

    If that target is gone from the listing (deleted meanwhile), everything is sent again rather than
    anything skipped: a page evaluated twice costs calls, a skipped resource would go unseen for a day.
    """
    if after is None:
        yield from targets
        return
    seen: list[Any] = []
    for target in targets:
        if dict(unit.key_of(target)) == dict(after):
            yield from targets
            return
        seen.append(target)
    yield from seen


def _pages(unit: CheckUnit, targets: Iterator[Any]) -> Iterator[list[Mapping[str, Any]]]:
    page: list[Mapping[str, Any]] = []
    size = 0
    for target in targets:
        key = unit.key_of(target)
        key_size = len(json.dumps(key, separators=(",", ":"))) + 1
        if page and (len(page) == PAGE_KEYS or size + key_size > PAGE_BYTES):
            yield page
            page, size = [], 0
        page.append(key)
        size += key_size
    if page:
        yield page


def send_pages(queue: str, pages: list[Page], region: str | None = None) -> None:
    """SendMessageBatch in batches within SQS's limits; AwsCallFailed when any page was not accepted."""
    sqs = clients.client("sqs", region)
    batch: list[dict[str, str]] = []
    size = 0

    def flush() -> None:
        if not batch:
            return
        try:
            response = sqs.send_message_batch(QueueUrl=queue, Entries=list(batch))
        except (ClientError, BotoCoreError) as err:
            raise AwsCallFailed.from_error("sqs:SendMessage", err) from err
        failed = response.get("Failed") or []
        if failed:
            codes = sorted({str(entry.get("Code", "?")) for entry in failed})
            raise AwsCallFailed("sqs:SendMessage", codes[0], f"{len(failed)} pages not accepted: {', '.join(codes)}")
        batch.clear()

    for page in pages:
        body = page.body()
        if batch and (len(batch) == BATCH_MESSAGES or size + len(body) > BATCH_BYTES):
            flush()
            size = 0
        batch.append({"Id": page.page_id, "MessageBody": body})
        size += len(body)
    flush()


# --- the summary -----------------------------------------------------------------------------------------------


_SEVERITY_ORDER = (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFORMATIONAL)


def _finish(counts: SweepCounts, account: str, region: str, settings: Settings, progress: ProgressStore) -> None:
    """The sweep is complete and this invocation claimed its summary: log it, count it, alert it once."""
    summary = counts.as_dict()
    logger.info("sweep finished", **summary)
    _sweep_metric("SweepCompleted", MetricUnit.Count, 1)
    _sweep_metric("SweepResourcesEvaluated", MetricUnit.Count, counts.evaluated)
    _sweep_metric("SweepSeconds", MetricUnit.Seconds, counts.seconds)
    _sweep_metric("SweepNewAlerts", MetricUnit.Count, counts.alerted)
    for severity in _SEVERITY_ORDER:
        _sweep_metric(
            f"SweepFindings{severity.value.title()}", MetricUnit.Count, counts.by_severity.get(severity.value, 0)
        )
    if counts.alerted == 0 and not counts.listing_failures:
        return  # nothing new: per-resource dedup kept every alert back, so the summary stays quiet too
    from mlwarden import alerts  # noqa: PLC0415 - only the invocation that completes a sweep sends one

    try:
        alerts.publish(summary_outcome(counts, account, region), settings.alert_topic_arn)
    except AwsCallFailed:
        progress.release_summary()
        raise


def _sweep_metric(name: str, unit: MetricUnit, value: float) -> None:
    """A sweep metric on its own, dimension `service` only: the same series whichever function emits it
    (a check's function adds its `check` dimension to the metrics it flushes)."""
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE, default_dimensions={"service": SERVICE}):
        pass


def summary_outcome(counts: SweepCounts, account: str, region: str) -> Outcome:
    """The one alert of a sweep: what it evaluated and found, by check and severity."""
    worst = next((s for s in _SEVERITY_ORDER if counts.by_severity.get(s.value)), Severity.INFORMATIONAL)
    if counts.listing_failures:
        worst = min(worst, Severity.HIGH, key=_SEVERITY_ORDER.index)
    found = ", ".join(
        f"{counts.by_severity[s.value]} {s.value}" for s in _SEVERITY_ORDER if counts.by_severity.get(s.value)
    )
    reason = (
        f"sweep {counts.sweep_id} evaluated {counts.evaluated} resources in {counts.seconds:.0f} s: "
        f"{found or 'nothing to report'}; {counts.alerted} new alerts"
    )
    if counts.listing_failures:
        reason += f"; could not list: {'; '.join(sorted(counts.listing_failures))}"
    return Outcome(
        check=SWEEP_CHECK,
        outcome=OutcomeKind.FLAGGED,
        severity=worst,
        reason=reason,
        trigger=Trigger.sweep(counts.sweep_id, account, region, now_iso()),
        resource=f"{account}/{region}",
        details=counts.as_dict(),
        findings=("sweep-summary",),
    )


def load_plan(env: Mapping[str, str] | None = None) -> Plan:
    """The planner's queues, read once at cold start; SettingsError names the variable that is wrong.

    SWEEP_WORK_QUEUES: a JSON object, check name -> its work queue URL. SWEEP_PLAN_QUEUE: the planner's own
    queue URL, for continuations.
    """
    from mlwarden.settings import SettingsError  # noqa: PLC0415

    env = os.environ if env is None else env
    raw = env.get("SWEEP_WORK_QUEUES", "").strip()
    try:
        queues = json.loads(raw)
    except ValueError:
        queues = None
    if (
        not isinstance(queues, dict)
        or not queues
        or not all(
            name in CHECK_NAMES and isinstance(url, str) and _QUEUE_URL.match(url) for name, url in queues.items()
        )
    ):
        raise SettingsError(
            f"SWEEP_WORK_QUEUES must be a JSON object of check name ({', '.join(CHECK_NAMES)}) to SQS queue URL, "
            f"got {raw[:200]!r}"
        )
    plan_queue = env.get("SWEEP_PLAN_QUEUE", "").strip()
    if not _QUEUE_URL.match(plan_queue):
        raise SettingsError(f"SWEEP_PLAN_QUEUE must be an SQS queue URL, got {plan_queue[:200]!r}")
    return Plan(work_queues=dict(queues), plan_queue=plan_queue)
