"""Domain errors. Each keeps the botocore error it came from as __cause__."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mlwarden.outcomes import Outcome

ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "AllAccessDisabled", "UnauthorizedOperation", "AuthorizationError"}
)


class AwsCallFailed(Exception):
    """An AWS call ML Warden needed did not succeed (after botocore's own retries)."""

    def __init__(self, action: str, code: str, message: str) -> None:
        super().__init__(f"{action} failed: {code}: {message}")
        self.action = action
        self.code = code
        self.message = message

    @property
    def access_denied(self) -> bool:
        return self.code in ACCESS_DENIED_CODES

    @property
    def explanation(self) -> str:
        if self.access_denied:
            return f"permission {self.action} is missing (AWS answered {self.code})"
        return f"{self.action} failed with {self.code}: {self.message}"

    @classmethod
    def from_error(cls, action: str, err: ClientError | BotoCoreError) -> AwsCallFailed:
        if isinstance(err, ClientError):
            error = err.response.get("Error", {})
            return cls(action, str(error.get("Code", "Unknown")), str(error.get("Message", "")))
        return cls(action, type(err).__name__, str(err))


def aws_call(action: str, func: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Call AWS; its errors become AwsCallFailed (from the original), named by the IAM action."""
    try:
        return func(**kwargs)
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error(action, err) from err


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


class RemediationFailed(Exception):
    """Raised by a handler after a `failed` outcome was recorded and alerted, so the event is retried."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(f"{outcome.check} failed on {outcome.resource}: {outcome.reason}")
        self.outcome = outcome


class AlertDeliveryFailed(Exception):
    """The outcome was recorded but its SNS alert could not be sent; raised so the event is retried."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(f"alert for {outcome.check} on {outcome.resource} could not be published")
        self.outcome = outcome


class FindingsNotSent(Exception):
    """The outcome was decided and alerted, but Security Hub did not take its findings; raised for a retry."""

    def __init__(self, outcome: Outcome, not_sent: list[str]) -> None:
        super().__init__(
            f"Security Hub findings for {outcome.check} on {outcome.resource} not sent: {'; '.join(not_sent)[:500]}"
        )
        self.outcome = outcome
        self.not_sent = not_sent
