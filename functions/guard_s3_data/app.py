"""Guard training-data buckets beyond "public": HTTPS only, cross-account grants, KMS encryption, access points."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import correlation_paths

from mlwarden.checks import guard_s3_data as data
from mlwarden.observability import logger, metrics, tracer
from mlwarden.pipeline import run_check
from mlwarden.settings import load_settings

if TYPE_CHECKING:  # an annotation only: not imported at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

SETTINGS = load_settings()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_check(data.CHECK, data.guard_data, event, SETTINGS, context).as_dict()
