"""Watch ML Warden's own inputs (the trail, Macie, its rules, functions and roles) and run the liveness canary."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import correlation_paths

from mlwarden import liveness
from mlwarden.checks import watch_inputs as watch
from mlwarden.observability import logger, metrics, tracer
from mlwarden.pipeline import run_check
from mlwarden.settings import load_settings

if TYPE_CHECKING:  # an annotation only: not imported at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

SETTINGS = load_settings()
OPTIONS = watch.load_options()
CHECK = functools.partial(watch.watch, options=OPTIONS)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if liveness.is_tick(event):
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        account = str(context.invoked_function_arn).split(":")[4]
        return watch.canary_tick(SETTINGS, OPTIONS, region, account, liveness.now())
    return run_check(watch.CHECK, CHECK, event, SETTINGS, context).as_dict()
