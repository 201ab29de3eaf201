"""Guard the KMS keys that encrypt ML data and models: deletion of a key in use, rotation, public key policies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import correlation_paths

from mlwarden.checks import guard_kms_keys as kms
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
    return run_check(kms.CHECK, kms.guard_keys, event, SETTINGS, context).as_dict()
