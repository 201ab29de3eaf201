"""What a handler imports at cold start, and what the layer ships for it.

Each handler is imported in a fresh interpreter, as Lambda's init phase does. What only some paths need stays
out of that import (`make bench` measures the cost): the X-Ray SDK unless tracing is on, Powertools' idempotency
utility until an event reaches the outcome table, the flap guard until a fix. With tracing on, the Tracer really
is Powertools' (EnableTracing=true used to fail at import: the layer had no X-Ray SDK).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = ("block_public_s3", "tag_pii_bucket", "check_sagemaker_encryption", "flag_wildcard_iam", "watch_inputs")
NOT_AT_COLD_START = ("aws_xray_sdk", "aws_lambda_powertools.utilities.idempotency", "mlwarden.flapguard")

IMPORT_HANDLER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
app = importlib.util.module_from_spec(spec)
sys.modules["app"] = app
spec.loader.exec_module(app)
from mlwarden import observability
print(json.dumps({"modules": sorted(sys.modules), "tracer": type(observability.tracer).__module__}))
"""


def _import_handler(handler: str, *, tracing: bool) -> dict[str, object]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "ALERT_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:mlwarden-alerts",
        "OUTCOME_TABLE": "mlwarden-outcomes",
        "LAMBDA_TASK_ROOT": str(ROOT / "functions" / handler),
        "AWS_LAMBDA_FUNCTION_NAME": f"mlwarden-{handler}",
        "MLWARDEN_TRACING": "true" if tracing else "false",
        "POWERTOOLS_TRACE_DISABLED": "true",  # no segments are sent from a test; the SDK is still imported
    }
    completed = subprocess.run(
        [sys.executable, "-c", IMPORT_HANDLER, str(ROOT / "functions" / handler / "app.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    loaded: dict[str, object] = json.loads(completed.stdout.splitlines()[-1])
    return loaded


@pytest.mark.parametrize("handler", HANDLERS)
def test_cold_start_imports_nothing_only_some_paths_need(handler: str) -> None:
    loaded = _import_handler(handler, tracing=False)

    modules = loaded["modules"]
    assert isinstance(modules, list)
    assert [m for m in modules if m.startswith(NOT_AT_COLD_START)] == []
    assert loaded["tracer"] == "mlwarden.observability"


@pytest.mark.parametrize("handler", HANDLERS)
def test_tracing_on_imports_powertools_tracer_and_the_xray_sdk(handler: str) -> None:
    loaded = _import_handler(handler, tracing=True)

    assert loaded["tracer"] == "aws_lambda_powertools.tracing.tracer"
    modules = loaded["modules"]
    assert isinstance(modules, list)
    assert "aws_xray_sdk" in modules


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([\w.]+)", requirement)
            assert match, f"{path.name}: not pinned exactly: {requirement}"
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_layer_pins_every_package_it_ships_and_tests_run_against_the_same_versions() -> None:
    pins = _pins(ROOT / "layers" / "core" / "requirements.txt")

    # Tracing needs the X-Ray SDK and its one dependency besides botocore; botocore itself is the runtime's.
    assert {"aws-lambda-powertools", "aws-xray-sdk", "wrapt"} <= set(pins)
    assert not {"boto3", "botocore", "s3transfer"} & set(pins)
    for name, version in pins.items():
        assert metadata.version(name) == version, f"the dev environment tests {name} {metadata.version(name)}"
