"""Logger, Metrics and Tracer, created once for every handler.

Tracing is off unless MLWARDEN_TRACING=true (template parameter EnableTracing):
Powertools' Tracer imports the X-Ray SDK and patches botocore even when
disabled, which adds about 30 % to a cold start and 9 MB (see `make bench`), so
the default uses a stand-in with the same decorator and annotation API.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from aws_lambda_powertools import Logger, Metrics

F = TypeVar("F", bound=Callable[..., Any])

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "mlwarden")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "MLWarden")

# Logs go to stderr so stdout stays free for `mlwarden replay --json`; Lambda
# sends both streams to the function's log group.
logger = Logger(service=SERVICE, logger_handler=logging.StreamHandler(sys.stderr))
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


class TracerLike(Protocol):
    def capture_lambda_handler(self, lambda_handler: F | None = None, **kwargs: Any) -> Any: ...

    def put_annotation(self, key: str, value: str | int | float | bool) -> None: ...


class _NoTracer:
    """Tracing disabled: same surface as Powertools' Tracer, does nothing."""

    def capture_lambda_handler(self, lambda_handler: F | None = None, **_: Any) -> Any:
        if lambda_handler is None:
            return lambda func: func
        return lambda_handler

    def put_annotation(self, key: str, value: str | int | float | bool) -> None:
        return None


def tracing_enabled() -> bool:
    return os.environ.get("MLWARDEN_TRACING", "false").strip().lower() == "true"


def _make_tracer() -> TracerLike:
    if not tracing_enabled():
        return _NoTracer()
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 - imports the X-Ray SDK: only when asked for

    return Tracer(service=SERVICE)  # type: ignore[return-value]


tracer: TracerLike = _make_tracer()
