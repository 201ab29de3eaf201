"""A deployed sweep's summary goes out exactly once, however its pages and its planner race.

Real threads against moto server (one request at a time, so each DynamoDB write is atomic as in DynamoDB:
see test_pipeline_concurrency). Pages finish in any order, some are delivered twice at once (SQS delivers at
least once), and the planner may finish listing after the last page was evaluated.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from mlwarden import fanout
from mlwarden.checks import load
from mlwarden.settings import RemediationMode
from mlwarden.sweep_progress import ProgressStore, SweepCounts

# The concurrency tests' moto server and account (fixtures): one server per module, reset for each test.
from tests.integration.test_pipeline_concurrency import Account, account, endpoint  # noqa: F401

pytestmark = pytest.mark.integration

ACCOUNT = "123456789012"
REGION = "us-east-1"
PAGES = 30


@pytest.fixture
def world(account: Account) -> Account:  # noqa: F811 - the imported fixture
    """The concurrency tests' account (moto server, one request at a time), the sweep in dry-run."""
    return replace(account, settings=replace(account.settings, remediation_mode=RemediationMode.DRY_RUN))


def _notifications(world: Account) -> list[dict[str, Any]]:
    marker = "\nOutcome (JSON):\n"
    return [json.loads(envelope["Message"].split(marker, 1)[1]) for envelope in world.alerts()]


def test_pages_and_planner_racing_claim_the_summary_exactly_once(world: Account) -> None:
    table = world.settings.outcome_table
    store = ProgressStore(table, "sweep-race")
    store.start(ACCOUNT, REGION)
    store.planned(str(page) for page in range(PAGES))

    def finish(job: int) -> SweepCounts | None:
        if job == PAGES:  # the planner, listing done, racing the last pages
            return ProgressStore(table, "sweep-race").planning_done()
        counts = SweepCounts("sweep-race", evaluated=2, alerted=1)
        counts.by_check["block_public_s3"] += 2
        return ProgressStore(table, "sweep-race").page_done(str(job % PAGES), counts)

    # Every page twice (a redelivery racing the first delivery), and the planner.
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(finish, [*range(PAGES), *range(PAGES, 2 * PAGES), PAGES]))

    claimed = [r for r in results if r is not None]
    assert len(claimed) == 1
    assert claimed[0].evaluated == 2 * PAGES  # each page counted once
    assert claimed[0].by_check == {"block_public_s3": 2 * PAGES}
    assert claimed[0].pages == PAGES


def test_concurrent_pages_of_real_buckets_send_one_summary_alert(world: Account) -> None:
    unit = load("block_public_s3")
    for page in range(PAGES):
        world.s3.create_bucket(Bucket=f"open-{page:02d}")
    store = ProgressStore(world.settings.outcome_table, "sweep-buckets")
    store.start(ACCOUNT, REGION)
    store.planned(str(page) for page in range(PAGES))
    pages = [
        fanout.Page("sweep-buckets", unit.name, ACCOUNT, REGION, str(page), ({"bucket": f"open-{page:02d}"},))
        for page in range(PAGES)
    ]

    def run(job: int) -> None:
        if job == PAGES:
            store.planning_done()
        else:
            fanout.evaluate_page(unit, pages[job % PAGES], world.settings)

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(run, [PAGES, *range(2 * PAGES)]))

    received = _notifications(world)
    summaries = [n for n in received if n["check"] == "sweep"]
    assert len(summaries) == 1
    assert summaries[0]["details"]["evaluated"] == PAGES
    assert summaries[0]["details"]["by_outcome"] == {"would-remediate": PAGES}
    assert sorted(n["resource"] for n in received if n["check"] != "sweep") == [
        f"arn:aws:s3:::open-{page:02d}" for page in range(PAGES)
    ]
