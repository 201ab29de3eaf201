"""Does a trail's event-selector configuration record management write events? Pure: no AWS calls.

ML Warden's CloudTrail rules only see management write calls (PutBucketAcl, AttachRolePolicy, ...). A
trail feeds EventBridge with them while it logs and its selectors include them:

- basic selectors: one with IncludeManagementEvents true and ReadWriteType All or WriteOnly;
- advanced selectors: one whose field selectors keep eventCategory Management and do not keep only
  read-only events (readOnly Equals true);
- neither: a trail whose selectors were never set records all management events (CloudTrail's default,
  https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_EventSelector.html).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

# The selectors that restore recording of every management event (CloudTrail's default), for undo commands.
ALL_MANAGEMENT_EVENTS: list[dict[str, Any]] = [{"ReadWriteType": "All", "IncludeManagementEvents": True}]


def records_management_writes(selectors: Mapping[str, Any]) -> bool:
    """True when a GetEventSelectors answer (EventSelectors / AdvancedEventSelectors) records management writes."""
    basic = _list(selectors.get("EventSelectors"))
    advanced = _list(selectors.get("AdvancedEventSelectors"))
    if not basic and not advanced:
        return True
    return any(_basic_records_writes(s) for s in basic) or any(_advanced_records_writes(s) for s in advanced)


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list) else []


def _basic_records_writes(selector: Any) -> bool:
    if not isinstance(selector, Mapping):
        return False
    return selector.get("IncludeManagementEvents", True) is True and selector.get("ReadWriteType", "All") in (
        "All",
        "WriteOnly",
    )


def _advanced_records_writes(selector: Any) -> bool:
    if not isinstance(selector, Mapping):
        return False
    fields = {str(f.get("Field")): f for f in _list(selector.get("FieldSelectors")) if isinstance(f, Mapping)}
    category = fields.get("eventCategory")
    if category is None or "Management" not in _list(category.get("Equals")):
        return False
    read_only = fields.get("readOnly")
    return read_only is None or [str(v).lower() for v in _list(read_only.get("Equals"))] != ["true"]


def selectors_of(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a GetEventSelectors answer that PutEventSelectors takes back (for memory and undo)."""
    if _list(answer.get("AdvancedEventSelectors")):
        return {"AdvancedEventSelectors": list(answer["AdvancedEventSelectors"])}
    return {"EventSelectors": list(_list(answer.get("EventSelectors"))) or ALL_MANAGEMENT_EVENTS}


def put_selectors_arguments(selectors: Mapping[str, Any]) -> str:
    """The `aws cloudtrail put-event-selectors` arguments that set these selectors again."""
    if "AdvancedEventSelectors" in selectors:
        return f"--advanced-event-selectors {_json_argument(selectors['AdvancedEventSelectors'])}"
    return f"--event-selectors {_json_argument(selectors.get('EventSelectors') or ALL_MANAGEMENT_EVENTS)}"


def _json_argument(value: Any) -> str:
    return shlex.quote(json.dumps(value, separators=(",", ":")))
