"""Block public access to S3 buckets (and the account) when an event says it may be open."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import correlation_paths

from mlwarden.checks import block_public_s3 as s3
from mlwarden.observability import logger, metrics, tracer
from mlwarden.pipeline import handle
from mlwarden.settings import load_settings

if TYPE_CHECKING:  # an annotation only: not imported at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

SETTINGS = load_settings()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(s3.CHECK, s3.block_public_access, event, SETTINGS, context)
