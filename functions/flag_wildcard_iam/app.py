"""Flag IAM policies that grant wildcards (admin, service:*, privilege escalation) when they are written."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import correlation_paths

from mlwarden.checks import flag_wildcard_iam as iam
from mlwarden.observability import logger, metrics, tracer
from mlwarden.pipeline import handle
from mlwarden.settings import load_settings

if TYPE_CHECKING:  # an annotation only: not imported at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

SETTINGS = load_settings()
CHECK = functools.partial(iam.flag_wildcard_policy, options=iam.load_options())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(iam.CHECK, CHECK, event, SETTINGS, context)
