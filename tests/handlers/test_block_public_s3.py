"""block_public_s3 in moto: the bucket's block after the event, and the alert as the subscriber got it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from conftest_types import AwsWorld, Handler  # noqa: F401  (placeholder, replaced below)
