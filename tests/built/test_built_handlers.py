"""The functions as `sam build` leaves them, under the Lambda runtime's Python: they import and handle an event.

Runs in `make validate`, after `make build`, which sets MLWARDEN_BUILD_DIR (skipped anywhere else: there is no
build to test). Each built function runs in a fresh python3.13 process (`-I -S`: no site-packages, no user
site, no PYTHON* variables) whose path is what Lambda gives it: the function's folder, the layer's `python/`
folder, then boto3 as the runtime provides it (installed for the test into a throwaway folder at the floor
pyproject.toml declares). No dev package can leak in, so a module the layer forgot to ship fails here, with
tracing off and with tracing on (EnableTracing=true imports the X-Ray SDK). Each handles one sample event from
events/ against moto server, and the resulting AWS state is read back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from mlwarden import clients
from mlwarden_cli.demo import _create_account
from mlwarden_cli.emulator import FAKE_CREDENTIALS, moto_server
from mlwarden_cli.template import load_template

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = os.environ.get("MLWARDEN_BUILD_DIR")
BUILD = ROOT / BUILD_DIR if BUILD_DIR else ROOT / ".aws-sam" / "build"
LAYER = BUILD / "CoreLayer" / "python"
EVENTS = ROOT / "events"
TEMPLATE = load_template(ROOT / "template.yaml")

pytestmark = pytest.mark.skipif(not BUILD_DIR, reason="needs `make build`; runs in `make validate`")

# Built function folder -> the sample event it handles.
SAMPLES = {
    "BlockPublicS3Function": "s3/put-bucket-acl-public.json",
    "TagPiiBucketFunction": "macie/sensitive-data-personal.json",
    "CheckSageMakerEncryptionFunction": "sagemaker/create-training-job-unencrypted.json",
    "FlagWildcardIamFunction": "iam/put-role-policy-s3-wildcard.json",
    "WatchInputsFunction": "cloudtrail/delete-trail.json",
    "GuardKmsKeysFunction": "kms/disable-key-rotation.json",
    "GuardS3DataFunction": "s3/put-bucket-encryption-sse-s3.json",
}

# Imports the handler the way the runtime does (module `app` from the function's folder), calls it once and
# writes what the test checks to the file named last: stdout belongs to Powertools' metrics.
RUNNER = """
import json, sys
function_dir, layer_dir, runtime_dir, event_path, report_path = sys.argv[1:6]
sys.path[:0] = [function_dir, layer_dir, runtime_dir]
import app

class Context:
    function_name = "mlwarden-build-test"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:mlwarden-build-test"
    aws_request_id = "52fdfc07-2182-454f-963f-5f0f9a621d72"

    def get_remaining_time_in_millis(self):
        return 60000

with open(event_path) as event_file:
    result = app.lambda_handler(json.load(event_file), Context())
origin = {name: sys.modules[name].__file__ for name in ("boto3", "botocore", "aws_lambda_powertools", "mlwarden")}
xray = sorted(name for name in sys.modules if name == "aws_xray_sdk" or name.startswith("aws_xray_sdk."))
with open(report_path, "w") as report:
    json.dump({"result": result, "origin": origin, "xray_modules": len(xray)}, report)
"""


def _boto3_floor() -> str:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (floor,) = [m.group(1) for d in dependencies if (m := re.fullmatch(r"boto3>=([\d.]+)", d))]
    return floor


@pytest.fixture(scope="module")
def runtime_python() -> str:
    chosen = (
        os.environ.get("RUNTIME_PYTHON")
        or subprocess.run(
            [sys.executable, str(ROOT / "tools" / "find_python.py"), "3.13"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    )
    assert chosen, "no python3.13 (PATH, pyenv's versions): the build test needs the functions' runtime"
    return chosen


@pytest.fixture(scope="module")
def runtime_boto3(runtime_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """boto3 as the runtime provides it: outside the layer, at the floor we promise to work with."""
    target = tmp_path_factory.mktemp("lambda-runtime")
    pip = [runtime_python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "--target", str(target), f"boto3=={_boto3_floor()}"],
        check=True,
        timeout=600,
    )
    return target


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def account(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], Callable[[str], Any]]:
    """A fresh moto account with the demo's resources: the template's tables and alert topic (as `mlwarden
    local init` creates them), the subscriber queue, the buckets, roles and training job the sample events name."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=5)
    for name, value in {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    clients.client.cache_clear()

    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=FAKE_CREDENTIALS["AWS_REGION"],
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    return _create_account(client, TEMPLATE, endpoint), client


def _lambda_environment(function: str, endpoint: str, exports: dict[str, str], *, tracing: bool) -> dict[str, str]:
    """What Lambda and template.yaml give the function; nothing from the developer's shell but PATH."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "AWS_LAMBDA_FUNCTION_NAME": "mlwarden-build-test",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "LAMBDA_TASK_ROOT": str(BUILD / function),
        **exports,  # ALERT_TOPIC_ARN, OUTCOME_TABLE, EXEMPTION_TABLE: what the template gives every function
        "REMEDIATOR_ROLE_ARN": f"arn:aws:iam::123456789012:role/{function}Role",
        "POWERTOOLS_SERVICE_NAME": "mlwarden",
        "POWERTOOLS_METRICS_NAMESPACE": "MLWarden",
        "MLWARDEN_TRACING": "true" if tracing else "false",
    }
    if tracing:
        # As Lambda sets them with active tracing: the X-Ray SDK reads the trace header of the invocation and
        # sends segments over UDP to the daemon address (nothing listens here; UDP does not care).
        env["_X_AMZN_TRACE_ID"] = "Root=1-6a5f1b2c-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1"
        env["AWS_XRAY_DAEMON_ADDRESS"] = "127.0.0.1:2000"
    return env


def _invoke(
    runtime_python: str, runtime_boto3: Path, function: str, env: dict[str, str], tmp_path: Path, event: Path
) -> dict[str, Any]:
    report = tmp_path / "report.json"
    paths = [str(BUILD / function), str(LAYER), str(runtime_boto3)]
    completed = subprocess.run(
        [runtime_python, "-I", "-S", "-c", RUNNER, *paths, str(event), str(report)],
        capture_output=True,
        text=True,
        env=env,
        cwd=BUILD / function,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, f"{function} failed under {runtime_python}:\n{completed.stderr[-4000:]}"
    loaded: dict[str, Any] = json.loads(report.read_text())
    return loaded


def _alerts(client: Callable[[str], Any], queue_url: str) -> list[dict[str, Any]]:
    messages = client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


Invoke = Callable[[str, bool], dict[str, Any]]


def _sample_for(function: str, client: Callable[[str], Any], tmp_path: Path) -> Path:
    """The function's sample event; a KMS sample is aimed at a key created here (moto makes up key ids)."""
    sample = EVENTS / SAMPLES[function]
    if function != "GuardKmsKeysFunction":
        return sample
    key_id = client("kms").create_key(Description="mlw build test")["KeyMetadata"]["KeyId"]
    event = json.loads(sample.read_text())
    aimed = tmp_path / "kms-event.json"
    aimed.write_text(json.dumps(event).replace(event["detail"]["requestParameters"]["keyId"], key_id))
    return aimed


@pytest.fixture
def invoke_built(
    runtime_python: str,
    runtime_boto3: Path,
    endpoint: str,
    account: tuple[dict[str, Any], Callable[[str], Any]],
    tmp_path: Path,
) -> Invoke:
    """Run a built function once on its sample event in a fresh moto account; returns what it reported."""
    created, client = account

    def invoke(function: str, tracing: bool) -> dict[str, Any]:
        env = _lambda_environment(function, endpoint, created["exports"], tracing=tracing)
        return _invoke(runtime_python, runtime_boto3, function, env, tmp_path, _sample_for(function, client, tmp_path))

    return invoke


@pytest.mark.parametrize("tracing", [False, True], ids=["tracing off", "tracing on"])
@pytest.mark.parametrize("function", sorted(SAMPLES))
def test_built_function_imports_and_handles_its_sample_event(
    function: str,
    tracing: bool,
    invoke_built: Invoke,
    runtime_boto3: Path,
    account: tuple[dict[str, Any], Callable[[str], Any]],
) -> None:
    report = invoke_built(function, tracing)

    # Only the layer and the runtime's boto3 were importable: no dev package answered an import.
    assert report["origin"]["mlwarden"].startswith(str(LAYER))
    assert report["origin"]["aws_lambda_powertools"].startswith(str(LAYER))
    assert report["origin"]["boto3"].startswith(str(runtime_boto3))
    assert report["origin"]["botocore"].startswith(str(runtime_boto3))
    # The X-Ray SDK is imported only when tracing is on (it costs cold start otherwise).
    assert (report["xray_modules"] > 0) is tracing
    result = report["result"]
    assert result["outcome"] not in ("failed", "ignored"), result
    created, client = account
    # The alert as the security team's subscriber received it, through SNS with its message attributes.
    alerts = _alerts(client, created["queue_url"])
    assert [a["MessageAttributes"]["outcome"]["Value"] for a in alerts] == [result["outcome"]]


def test_public_bucket_is_blocked_by_the_built_function(
    invoke_built: Invoke, account: tuple[dict[str, Any], Callable[[str], Any]]
) -> None:
    report = invoke_built("BlockPublicS3Function", True)

    assert report["result"]["outcome"] == "remediated"
    _, client = account
    block = client("s3").get_public_access_block(Bucket="mlw-training-data-acl")["PublicAccessBlockConfiguration"]
    assert all(block.values())


def test_layer_ships_exactly_its_pinned_requirements_and_no_boto() -> None:
    pinned = {
        name.lower().replace("_", "-"): version
        for line in (ROOT / "layers" / "core" / "requirements.txt").read_text().splitlines()
        if (match := re.fullmatch(r"([A-Za-z0-9_.-]+)==([\w.]+)", line.strip()))
        for name, version in [match.groups()]
    }
    shipped = {
        m.group(1).lower().replace("_", "-"): m.group(2)
        for path in LAYER.glob("*.dist-info")
        if (m := re.fullmatch(r"(.+)-([^-]+)\.dist-info", path.name))
    }
    assert shipped == pinned
    assert not (LAYER / "boto3").exists()
    assert not (LAYER / "botocore").exists()
    # Bytecode for the runtime's Python is shipped (Lambda's file system is read-only).
    assert list((LAYER / "mlwarden" / "__pycache__").glob("*.cpython-313.pyc"))
