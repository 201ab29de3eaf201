"""Plan a deployed sweep: list each check's resources and send them, in pages, to the checks' work queues."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlwarden.fanout import load_plan, plan_batch
from mlwarden.observability import logger, metrics, tracer
from mlwarden.settings import load_settings

if TYPE_CHECKING:  # an annotation only: not imported at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

SETTINGS = load_settings()
PLAN = load_plan()


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return plan_batch(event, SETTINGS, PLAN, context)
