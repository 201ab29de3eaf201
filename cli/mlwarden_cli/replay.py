"""Replay events through template.yaml's routing and the handlers, in this process, without Docker.

Every event goes to every function whose rule pattern matches it (moto's
implementation of EventBridge pattern matching), and runs there with the
function's environment from the template (parameter defaults), overridden by the
process environment of the same name. AWS is whatever the standard environment
points at (AWS_ENDPOINT_URL for moto server, or a real account).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from mlwarden_cli.template import DEFAULT_ACCOUNT, FunctionSpec, Template


class ReplayInputError(ValueError):
    """An event file cannot be read; replay exits 2."""


class HandlerSetupError(RuntimeError):
    """A handler cannot start (its configuration is invalid); replay exits 2."""


@dataclass(frozen=True)
class Replayed:
    source: str  # FILE or FILE:N for the Nth event of a file
    event_id: str | None
    function: str | None
    outcome: str
    resource: str | None
    severity: str | None
    actions: tuple[str, ...]
    alerted: bool
    reason: str
    raised: bool = False
    # An earlier delivery of the same event decided this; nothing was done again.
    redelivered: bool = False
    # The Security Hub control ids the outcome answers (SageMaker.5); empty when none applies.
    controls: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "function": self.function,
            "outcome": self.outcome,
            "resource": self.resource,
            "severity": self.severity,
            "actions": list(self.actions),
            "alerted": self.alerted,
            "reason": self.reason,
            "source": self.source,
            "redelivered": self.redelivered,
            "controls": list(self.controls),
        }


# Replay's own outcomes, beside the checks' ones: no function ran.
UNROUTED = "unrouted"
UNUSABLE = "unusable"


def not_run(source: str, event_id: Any, outcome: str, reason: str) -> Replayed:
    """The report line for an entry that no function ran on: unrouted, or not an event at all."""
    return Replayed(
        source=source,
        event_id=event_id if isinstance(event_id, str) else None,
        function=None,
        outcome=outcome,
        resource=None,
        severity=None,
        actions=(),
        alerted=False,
        reason=reason,
    )


def unusable(source: str, reason: str) -> Replayed:
    return not_run(source, None, UNUSABLE, reason)


@dataclass(frozen=True)
class Unusable:
    """An entry of an event file that is not an event (not a JSON object, or too deep to decode): skipped."""

    reason: str


def read_events(path: Path) -> list[Any]:
    """A file holds one event object, a JSON array of them, or JSON Lines.

    Each entry is an event or an `Unusable` saying why it is not one, so that one bad entry is
    reported and skipped while the others are replayed. A file that is not JSON at all is a
    `ReplayInputError`.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ReplayInputError(f"{path}: cannot read: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ReplayInputError(f"{path}: not UTF-8 text") from err
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return _json_lines(path, text)
    return (
        [_event_or_unusable(entry, "array element") for entry in document]
        if isinstance(document, list)
        else [_event_or_unusable(document, "document")]
    )


def _event_or_unusable(entry: Any, what: str) -> Any:
    if isinstance(entry, Mapping):
        return entry
    return Unusable(f"{what} is {_json_type(entry)}, not a JSON object (an EventBridge event)")


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _json_lines(path: Path, text: str) -> list[Any]:
    entries: list[Any] = []
    first_error: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(_event_or_unusable(json.loads(line), f"line {number}"))
        except RecursionError:
            # json raises RecursionError, not ValueError, for deep nesting: one event, not the whole file.
            entries.append(Unusable(f"line {number} nests too deeply to decode"))
        except ValueError as err:
            first_error = first_error or f"line {number}: {err}"
            entries.append(Unusable(f"line {number} is not JSON: {err}"))
    if not entries:
        raise ReplayInputError(f"{path}: holds no events")
    if all(isinstance(entry, Unusable) for entry in entries) and first_error is not None:
        raise ReplayInputError(f"{path}: not a JSON object, a JSON array or JSON Lines ({first_error})")
    return entries


class _Context:
    """The parts of Lambda's context object the handlers and Powertools read."""

    def __init__(self, function_name: str, region: str, account: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account}:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "replay"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


# Replay keeps stdout for its own report: Powertools metrics (EMF on stdout) are off unless asked for.
REPLAY_DEFAULTS = {"POWERTOOLS_METRICS_DISABLED": "true"}


@contextmanager
def _metrics_cleared() -> Iterator[None]:
    """Forget the invocation's metrics afterwards: with metrics disabled Powertools keeps them across
    invocations and prints them once 100 have piled up, however many events one process replays."""
    try:
        yield
    finally:
        from mlwarden.observability import metrics  # noqa: PLC0415 - after the handler set up its environment

        metrics.clear_metrics()


@contextmanager
def environment_set(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous


class Replayer:
    def __init__(self, template: Template, mode: str | None = None) -> None:
        self.template = template
        self.mode = mode
        self.region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.account = os.environ.get("MLWARDEN_ACCOUNT_ID") or DEFAULT_ACCOUNT
        self._handlers: dict[tuple[str, tuple[tuple[str, str], ...]], Callable[..., Any]] = {}

    def function_environment(self, function: FunctionSpec) -> dict[str, str]:
        env = self.template.environment(function, self.account, self.region)
        for name in function.environment:
            if name in os.environ:
                env[name] = os.environ[name]
        if self.mode is not None:
            env["REMEDIATION_MODE"] = self.mode
        for name, value in REPLAY_DEFAULTS.items():
            env.setdefault(name, os.environ.get(name, value))
        env.setdefault("AWS_REGION", self.region)
        env["AWS_LAMBDA_FUNCTION_NAME"] = function.logical_id
        return env

    def _handler(self, function: FunctionSpec, env: Mapping[str, str]) -> Callable[..., Any]:
        key = (function.logical_id, tuple(sorted(env.items())))
        if key not in self._handlers:
            name = f"mlwarden_replay_{function.logical_id}_{len(self._handlers)}"
            spec = importlib.util.spec_from_file_location(name, function.handler_file)
            if spec is None or spec.loader is None:
                raise HandlerSetupError(f"{function.logical_id}: cannot load {function.handler_file}")
            module: ModuleType = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except ValueError as err:  # SettingsError and friends: configuration, not the event
                unresolved = sorted(set(function.environment) - set(env))
                hint = f" (replay cannot resolve {', '.join(unresolved)} from the template: set it in the environment)"
                raise HandlerSetupError(f"{function.logical_id}: {err}{hint if unresolved else ''}") from err
            self._handlers[key] = getattr(module, function.handler_name)
        return self._handlers[key]

    def replay(self, event: Any, source: str, only: list[FunctionSpec] | None = None) -> list[Replayed]:
        """Run the event in every function whose rule matches it, or in `only` those functions."""
        event_id = event.get("id") if isinstance(event, Mapping) else None
        targets = self.template.route(event) if only is None else only
        if not targets:
            return [not_run(source, event_id, UNROUTED, "no rule in the template matches this event")]
        return [self._invoke(function, event, source) for function in targets]

    def _invoke(self, function: FunctionSpec, event: Any, source: str) -> Replayed:
        env = self.function_environment(function)
        # stdout is replay's report: whatever a handler or Powertools prints (EMF metric lines) goes to stderr.
        with environment_set(env), redirect_stdout(sys.stderr), _metrics_cleared():
            handler = self._handler(function, env)
            context = _Context(function.logical_id, self.region, self.account)
            try:
                result = handler(event, context)
            except Exception as err:  # noqa: BLE001 - a handler that raises is reported, as Lambda would
                outcome = getattr(err, "outcome", None)
                if outcome is not None:
                    return self._from_outcome(function, outcome.as_dict(), source, raised=True, error=err)
                return Replayed(
                    source=source,
                    event_id=event.get("id") if isinstance(event, Mapping) else None,
                    function=function.logical_id,
                    outcome="failed",
                    resource=None,
                    severity=None,
                    actions=(),
                    alerted=False,
                    reason=f"handler raised {type(err).__name__}: {err}",
                    raised=True,
                )
        return self._from_outcome(function, result, source, raised=False)

    @staticmethod
    def _from_outcome(
        function: FunctionSpec,
        outcome: Mapping[str, Any],
        source: str,
        raised: bool,
        error: BaseException | None = None,
    ) -> Replayed:
        reason = str(outcome.get("reason", ""))
        if error is not None:
            reason = f"{reason} (handler raised {type(error).__name__})"
        return Replayed(
            source=source,
            event_id=outcome.get("event_id"),
            function=function.logical_id,
            outcome=str(outcome.get("outcome")),
            resource=outcome.get("resource"),
            severity=outcome.get("severity"),
            actions=tuple(outcome.get("actions", ())),
            alerted=bool(outcome.get("alerted")),
            reason=reason,
            raised=raised,
            redelivered=bool(outcome.get("redelivered")),
            controls=tuple(str(control) for control in outcome.get("controls") or ()),
        )


def format_table(results: list[Replayed]) -> str:
    headers = ("event", "function", "outcome", "severity", "resource", "alert", "reason")
    rows = [
        (
            r.source,
            r.function or "-",
            r.outcome + (" (redelivered)" if r.redelivered else "") + (" (raised)" if r.raised else ""),
            r.severity or "-",
            (r.resource or "-").removeprefix("arn:aws:s3:::"),
            "sent" if r.alerted else "-",
            r.reason if len(r.reason) <= 90 else r.reason[:87] + "...",
        )
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in (headers, *rows)) for i in range(len(headers) - 1)]
    lines = []
    for row in (headers, *rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)
