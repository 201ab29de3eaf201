"""Exemption by tag, read live at decision time.

The tag value is `true` (or any note) for an open-ended exemption, or carries a
date `YYYY-MM-DD` after which the exemption no longer counts. `false`, `no`, `0`
or an empty value mean "not exempt"; an impossible date fails closed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
# Anything else that looks like a date (2027-1-31, 31/01/2027, 20270131) is refused rather than read
# as a note: a misspelt expiry must not become an exemption without end.
_DATE_LIKE = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}|(?<!\d)\d{8}(?!\d)")
_NEGATIVE = frozenset({"", "false", "no", "0", "off", "none"})


@dataclass(frozen=True)
class Exemption:
    """Whether a resource is exempt from remediation, why, and until when."""

    active: bool
    reason: str
    expires: dt.date | None = None


NOT_EXEMPT = Exemption(active=False, reason="no exemption tag")


def exemption_from_tags(tags: Mapping[str, str] | None, tag_key: str, today: dt.date | None = None) -> Exemption:
    """Decide exemption from a resource's tags. `tags=None` means they could not be read: fail closed."""
    if tags is None:
        return Exemption(active=False, reason="tags could not be read, so no exemption applies (fail closed)")
    if tag_key not in tags:
        return NOT_EXEMPT
    value = tags[tag_key].strip()
    if value.lower() in _NEGATIVE:
        return Exemption(active=False, reason=f"tag {tag_key} is set to {value!r}, which does not exempt")
    match = _DATE.search(value)
    if match is None:
        if _DATE_LIKE.search(value):
            return Exemption(
                active=False, reason=f"tag {tag_key} has an expiry not written as YYYY-MM-DD (fail closed)"
            )
        return Exemption(active=True, reason=f"tagged {tag_key}, no expiry")
    try:
        expires = dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return Exemption(active=False, reason=f"tag {tag_key} has an invalid expiry date {match[0]!r} (fail closed)")
    today = today or dt.datetime.now(dt.UTC).date()
    if expires < today:
        reason = f"exemption tag {tag_key} expired on {expires.isoformat()}"
        return Exemption(active=False, reason=reason, expires=expires)
    return Exemption(active=True, reason=f"tagged {tag_key} until {expires.isoformat()}", expires=expires)
