"""Fuzz tests run the handlers without the outcome table.

They prove that damaged events end in a valid outcome and touch AWS only when genuine; dedup by event
id is beside that point and would triple the AWS calls per example. The outcome store's own handling
of damaged event ids is fuzzed in test_fuzz_outcome_store.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def make_handler(make_handler: Callable[..., Any]) -> Callable[..., Any]:
    def make(**kwargs: Any) -> Any:
        return make_handler(**{**kwargs, "env": {"OUTCOME_TABLE": None, **(kwargs.get("env") or {})}})

    return make
