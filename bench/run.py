"""Benchmark of the handlers: cold start and peak memory of every handler, warm per-event time of block_public_s3.

    .venv/bin/python bench/run.py            # readable table
    .venv/bin/python bench/run.py --json     # the same figures as JSON on stdout

Every comparison is a ratio measured in the same run, with the runs of the two
sides interleaved, because absolute times on a shared machine drift from minute
to minute. Benchmarks inform, they do not gate: the exit status is 0 on a MISS
(and non-zero only when the benchmark itself breaks). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
# Every handler's cold start is measured; the warm per-event figures are block_public_s3's.
HANDLER_NAMES = ("block_public_s3", "tag_pii_bucket", "check_sagemaker_encryption", "flag_wildcard_iam")
HANDLER = FUNCTIONS / "block_public_s3" / "app.py"
CORE = ROOT / "layers" / "core" / "mlwarden"
EVENT_FILE = ROOT / "events" / "s3" / "put-bucket-acl-public.json"

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:mlwarden-alerts"
OUTCOME_TABLE = "mlwarden-outcomes"
EXEMPTION_TABLE = "mlwarden-exemptions"
REGION = "us-east-1"

COLD_RATIO_TARGET = 1.10
MEMORY_RATIO_TARGET = 1.2
OWN_MEDIAN_TARGET_MS = 1.0

# --- the event -----------------------------------------------------------------------------------------

# A PutBucketAcl call that made a bucket public-read, as EventBridge delivers it
# (shape of a real CloudTrail record; ids, account and principal are made up).
# Used when events/s3/put-bucket-acl-public.json does not exist.
INLINE_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "AWS API Call via CloudTrail",
    "source": "aws.s3",
    "account": "123456789012",
    "time": "2025-01-14T09:12:31Z",
    "region": "us-east-1",
    "resources": [],
    "detail": {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROA3EXAMPLEEXAMPLE00:jdoe",
            "arn": "arn:aws:sts::123456789012:assumed-role/DataScientist/jdoe",
            "accountId": "123456789012",
            "accessKeyId": "ASIA3EXAMPLEEXAMPLE0",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": "AROA3EXAMPLEEXAMPLE00",
                    "arn": "arn:aws:iam::123456789012:role/DataScientist",
                    "accountId": "123456789012",
                    "userName": "DataScientist",
                },
                "attributes": {"creationDate": "2025-01-14T08:55:02Z", "mfaAuthenticated": "false"},
            },
        },
        "eventTime": "2025-01-14T09:12:31Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": "PutBucketAcl",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.24",
        "userAgent": "[aws-cli/2.22.4 md/awscrt#0.23.4 ua/2.0 os/linux#6.8.0 md/arch#x86_64 lang/python#3.12.6]",
        "requestParameters": {
            "bucketName": "mlw-training-data-acl",
            "Host": "mlw-training-data-acl.s3.us-east-1.amazonaws.com",
            "acl": [""],
            "x-amz-acl": ["public-read"],
        },
        "responseElements": None,
        "additionalEventData": {
            "SignatureVersion": "SigV4",
            "CipherSuite": "TLS_AES_128_GCM_SHA256",
            "bytesTransferredIn": 0,
            "AuthenticationMethod": "AuthHeader",
            "x-amz-id-2": "EXAMPLEb6Tv0mYvPq5yJtXzNpWw3kH2sLqR7dF8gVcA1eZ0oU9iB4nM5lK6jH=",
            "bytesTransferredOut": 0,
        },
        "requestID": "9T8MFKZ2RXA0EXAM",
        "eventID": "0b4a7c1e-3f1d-4b9e-9a57-5d2f7e8c6a10",
        "readOnly": False,
        "resources": [
            {
                "accountId": "123456789012",
                "type": "AWS::S3::Bucket",
                "ARN": "arn:aws:s3:::mlw-training-data-acl",
            }
        ],
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": "123456789012",
        "eventCategory": "Management",
        "tlsDetails": {
            "tlsVersion": "TLSv1.3",
            "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": "mlw-training-data-acl.s3.us-east-1.amazonaws.com",
        },
    },
}


def load_event() -> tuple[dict[str, Any], str]:
    if EVENT_FILE.is_file():
        return json.loads(EVENT_FILE.read_text()), str(EVENT_FILE.relative_to(ROOT))
    return copy.deepcopy(INLINE_EVENT), "inline in bench/run.py"


# --- environment ---------------------------------------------------------------------------------------


def lambda_env(*, tracing: bool, handler: str = "block_public_s3") -> dict[str, str]:
    """What the Lambda runtime and template.yaml give the function, with fake credentials.

    LAMBDA_TASK_ROOT matters: Powertools' Tracer only patches botocore when it
    sees it, so without it the tracing figure would be too kind.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "MLWARDEN_", "POWERTOOLS_", "LAMBDA_", "_X_AMZN", "PYTHON"))
    }
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            # No shared config or credentials files, no instance metadata: same for both sides.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
            "AWS_LAMBDA_FUNCTION_NAME": f"mlwarden-{handler.replace('_', '-')}",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "LAMBDA_TASK_ROOT": str(FUNCTIONS / handler),
            "_HANDLER": "app.lambda_handler",
            "ALERT_TOPIC_ARN": TOPIC_ARN,
            # As deployed: every event goes through the outcome table (Powertools idempotency) and the flap guard.
            "OUTCOME_TABLE": OUTCOME_TABLE,
            # ... and every decision on an open resource reads the exemption registry (one Scan).
            "EXEMPTION_TABLE": EXEMPTION_TABLE,
        }
    )
    if tracing:
        env["MLWARDEN_TRACING"] = "true"
    return env


# --- 1 and 3: cold start and peak memory, one fresh process per sample -------------------------------

BARE_CODE = 'import boto3\nboto3.client("s3")\n'


def handler_code(handler: str) -> str:
    """Load the handler by file path as the runtime does, then create the first client.

    The same client as the bare side (S3): the ratio then shows ML Warden's own cost, not the difference
    between botocore's service models (SageMaker's is several times S3's).
    """
    return f"""\
import importlib.util, sys
spec = importlib.util.spec_from_file_location("app", {str(FUNCTIONS / handler / "app.py")!r})
app = importlib.util.module_from_spec(spec)
sys.modules["app"] = app
spec.loader.exec_module(app)
assert callable(app.lambda_handler)
from mlwarden import clients
clients.client("s3")
"""


@dataclass(frozen=True)
class Variant:
    name: str
    code: str
    env: dict[str, str]


@dataclass(frozen=True)
class Sample:
    wall_ms: float
    # User + system CPU time of the child: unlike wall time, it does not grow while the process waits for a
    # core, so it stays readable when other work shares the machine.
    cpu_ms: float
    maxrss_mb: float


def spawn(variant: Variant, errors: Path) -> Sample:
    """Run one fresh interpreter; wall time from spawn to exit as the parent sees it, and its peak RSS."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, str(errors), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    ]
    argv = [sys.executable, "-c", variant.code]
    start = time.perf_counter()
    pid = os.posix_spawn(sys.executable, argv, variant.env, file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"bench: the {variant.name} process exited {code}:\n{errors.read_text()}")
    cpu_ms = (usage.ru_utime + usage.ru_stime) * 1000
    return Sample(wall_ms=wall * 1000, cpu_ms=cpu_ms, maxrss_mb=usage.ru_maxrss / 1024)  # ru_maxrss: KiB on Linux


def variant_name(handler: str, *, tracing: bool) -> str:
    return f"{handler}, tracing on" if tracing else handler


def cold(rounds: int, progress: Callable[[str], None]) -> dict[str, list[Sample]]:
    with tempfile.TemporaryDirectory(prefix="mlwarden-bench-") as tmp:
        # Bytecode for every side lives in one private cache, written by the discarded warm-up
        # rounds, so no side compiles source in a timed run and nothing is written into the repo.
        pycache = {"PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}
        variants = [Variant("bare boto3", BARE_CODE, lambda_env(tracing=False) | pycache)]
        for handler in HANDLER_NAMES:
            for tracing in (False, True):
                env = lambda_env(tracing=tracing, handler=handler) | pycache
                variants.append(Variant(variant_name(handler, tracing=tracing), handler_code(handler), env))
        errors = Path(tmp) / "stderr"
        samples: dict[str, list[Sample]] = {v.name: [] for v in variants}
        progress(f"cold start: {rounds} fresh processes for each of {len(variants)} variants, interleaved")
        for _ in range(2):
            for variant in variants:
                spawn(variant, errors)
        for index in range(rounds):
            # Rotate the order each round so no side always runs first (or right after another).
            shift = index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                samples[variant.name].append(spawn(variant, errors))
        return samples


# --- 2: warm per-event time with every AWS call stubbed -----------------------------------------------


@dataclass
class FakeLambdaContext:
    function_name: str = "mlwarden-block-public-s3"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:mlwarden-block-public-s3"
    aws_request_id: str = "52fdfc07-2182-454f-963f-5f0f9a621d72"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


class CallTimer:
    """Wraps a client's _make_api_call: everything botocore and the Stubber do for a call is timed."""

    def __init__(self) -> None:
        self.spent_ns = 0
        self.calls = 0
        self.log: list[tuple[Any, str, dict[str, Any]]] = []
        self.recording = False

    def wrap(self, client: Any) -> None:
        original = client._make_api_call

        def timed(operation_name: str, api_params: dict[str, Any]) -> Any:
            if self.recording:
                self.log.append((client, operation_name, copy.deepcopy(api_params)))
            start = time.perf_counter_ns()
            try:
                return original(operation_name, api_params)
            finally:
                self.spent_ns += time.perf_counter_ns() - start
                self.calls += 1

        client._make_api_call = timed


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Send file descriptors 1 and 2 to /dev/null.

    At the descriptor level, because the Logger's handler holds the original
    sys.stderr object and swapping sys.stderr would not reach it.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def load_handler() -> ModuleType:
    """Import the handler by file path, as the Lambda runtime does for app.lambda_handler."""
    spec = importlib.util.spec_from_file_location("app", HANDLER)
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench: cannot load {HANDLER}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
    return module


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


# A remediated event: 4 bucket reads (block, ACL, policy status, tags), the account block (for severity), the
# write, the read-back, the alert: 8 S3/SNS calls. Plus 7 DynamoDB calls: decide and alert records (put, update
# each), tag_pii_bucket's PII record for the bucket (one get), the exemption registry (one scan), the flap
# guard's count of the fix.
REMEDIATED_CALLS = 15
COMPLIANT_CALLS = 3  # the decide record's put and update around one S3 read


def warm(events: int, progress: Callable[[str], None]) -> dict[str, Any]:
    os.environ.clear()
    os.environ.update(lambda_env(tracing=False))
    from botocore import xform_name  # noqa: PLC0415 - after the environment is set
    from botocore.exceptions import ClientError  # noqa: PLC0415
    from botocore.stub import ANY, Stubber  # noqa: PLC0415

    from mlwarden import clients  # noqa: PLC0415

    app = load_handler()
    s3 = clients.client("s3")
    sns = clients.client("sns", REGION)
    s3control = clients.client("s3control")
    dynamodb = clients.client("dynamodb")
    event, event_source = load_event()
    bucket = event["detail"]["requestParameters"]["bucketName"]
    context = FakeLambdaContext()

    all_on = dict.fromkeys(("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True)
    owner = {"DisplayName": "mlw-data", "ID": "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"}
    stubs = {"s3": Stubber(s3), "sns": Stubber(sns), "s3control": Stubber(s3control), "dynamodb": Stubber(dynamodb)}
    account = event["account"]

    def queue_outcome_records(*, fixed: bool) -> None:
        """DynamoDB's answers, in call order: Powertools' records (in progress, then completed) around the
        decision and the alert; inside the decision to fix, the PII record's read, the exemption registry's
        scan and the flap guard's count of the fix."""
        d = stubs["dynamodb"]
        d.add_response("put_item", {})
        if fixed:
            # tag_pii_bucket's PII record for the bucket (none: no finding), then the exemption registry.
            d.add_response(
                "get_item",
                {},
                expected_params={
                    "TableName": OUTCOME_TABLE,
                    "Key": {"id": {"S": f"tag_pii_bucket#pii#arn:aws:s3:::{bucket}"}},
                    "ConsistentRead": True,
                },
            )
            d.add_response(
                "scan",
                {"Items": [], "Count": 0, "ScannedCount": 0},
                expected_params={"TableName": EXEMPTION_TABLE, "ConsistentRead": True},
            )
            fix = {"M": {"t": {"N": f"{time.time():.3f}"}, "a": {"S": "someone"}}}
            d.add_response("update_item", {"Attributes": {"fix_0": fix, "total_fixes": {"N": "1"}}})
        d.add_response("update_item", {})
        if fixed:
            d.add_response("put_item", {})
            d.add_response("update_item", {})

    def queue_remediated() -> None:
        queue_outcome_records(fixed=True)
        s = stubs["s3"]
        s.add_client_error(
            "get_public_access_block",
            "NoSuchPublicAccessBlockConfiguration",
            "The public access block configuration was not found",
            404,
            expected_params={"Bucket": bucket},
        )
        stubs["s3control"].add_client_error(
            "get_public_access_block",
            "NoSuchPublicAccessBlockConfiguration",
            "The public access block configuration was not found",
            404,
            expected_params={"AccountId": account},
        )
        s.add_response(
            "get_bucket_acl",
            {
                "Owner": owner,
                "Grants": [
                    {"Grantee": {"Type": "CanonicalUser", **owner}, "Permission": "FULL_CONTROL"},
                    {
                        "Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
                        "Permission": "READ",
                    },
                ],
            },
            expected_params={"Bucket": bucket},
        )
        s.add_client_error(
            "get_bucket_policy_status",
            "NoSuchBucketPolicy",
            "The bucket policy does not exist",
            404,
            expected_params={"Bucket": bucket},
        )
        s.add_client_error(
            "get_bucket_tagging", "NoSuchTagSet", "The TagSet does not exist", 404, expected_params={"Bucket": bucket}
        )
        s.add_response(
            "put_public_access_block",
            {},
            expected_params={"Bucket": bucket, "PublicAccessBlockConfiguration": all_on},
        )
        s.add_response(
            "get_public_access_block",
            {"PublicAccessBlockConfiguration": all_on},
            expected_params={"Bucket": bucket},
        )
        stubs["sns"].add_response(
            "publish",
            {"MessageId": "5b0e3d5c-8a4e-5b0f-9d1e-2a6c7f3e9b10"},
            expected_params={
                "TopicArn": TOPIC_ARN,
                "Subject": f"[ML Warden] HIGH fixed: block_public_s3 {bucket}",
                "Message": ANY,
                "MessageAttributes": ANY,
            },
        )

    def queue_compliant() -> None:
        queue_outcome_records(fixed=False)
        stubs["s3"].add_response(
            "get_public_access_block",
            {"PublicAccessBlockConfiguration": all_on},
            expected_params={"Bucket": bucket},
        )

    timer = CallTimer()
    timer.wrap(s3)
    timer.wrap(sns)
    timer.wrap(s3control)
    timer.wrap(dynamodb)
    for stubber in stubs.values():
        stubber.activate()

    cases: dict[str, tuple[Callable[[], None], str, int]] = {
        "remediated": (queue_remediated, "remediated", REMEDIATED_CALLS),
        "compliant": (queue_compliant, "compliant", COMPLIANT_CALLS),
    }
    totals: dict[str, list[float]] = {name: [] for name in cases}
    own: dict[str, list[float]] = {name: [] for name in cases}

    def one(name: str, keep: bool) -> None:
        queue, expected_outcome, expected_calls = cases[name]
        queue()
        timer.spent_ns = timer.calls = 0
        start = time.perf_counter_ns()
        result = app.lambda_handler(event, context)
        total_ns = time.perf_counter_ns() - start
        for stubber in stubs.values():
            stubber.assert_no_pending_responses()
        if result["outcome"] != expected_outcome or timer.calls != expected_calls:
            raise SystemExit(
                f"bench: the {name} event ended {result['outcome']!r} after {timer.calls} AWS calls, "
                f"expected {expected_outcome!r} after {expected_calls}"
            )
        if keep:
            totals[name].append(total_ns / 1e6)
            own[name].append((total_ns - timer.spent_ns) / 1e6)

    # Cross-check: the same calls the handler makes (recorded once, same parameters), made directly
    # on the stubbed clients with nothing of the handler around them.
    calls: list[tuple[Callable[..., Any], dict[str, Any]]] = []
    alone: list[float] = []

    def calls_alone(keep: bool) -> None:
        queue_remediated()
        start = time.perf_counter_ns()
        for method, params in calls:
            with contextlib.suppress(ClientError):
                method(**params)
        elapsed = time.perf_counter_ns() - start
        for stubber in stubs.values():
            stubber.assert_no_pending_responses()
        if keep:
            alone.append(elapsed / 1e6)

    progress(f"warm: {events} events of each kind, output to /dev/null meanwhile")
    with quiet():
        # The first calls load botocore's service models, endpoint rules and Powertools' lazy parts.
        for _ in range(50):
            for name in cases:
                one(name, keep=False)
        timer.recording = True
        one("remediated", keep=False)
        timer.recording = False
        calls.extend((getattr(client, xform_name(operation)), params) for client, operation, params in timer.log)
        for _ in range(50):
            calls_alone(keep=False)
        for _ in range(events):
            # Interleaved, so that a busy moment on the machine hits all three alike.
            for name in cases:
                one(name, keep=True)
            calls_alone(keep=True)

    for stubber in stubs.values():
        stubber.deactivate()

    def summary(name: str) -> dict[str, float | int]:
        return {
            "aws_calls": cases[name][2],
            "total_median_ms": statistics.median(totals[name]),
            "total_p95_ms": percentile(totals[name], 95),
            "own_median_ms": statistics.median(own[name]),
            "own_p95_ms": percentile(own[name], 95),
        }

    remediated = summary("remediated")
    alone_median = statistics.median(alone)
    return {
        "events_each": events,
        "event": event_source,
        "bucket": bucket,
        "remediated": remediated,
        "compliant": summary("compliant"),
        "stubbed_calls_alone_median_ms": alone_median,
        "own_median_by_subtraction_ms": float(remediated["total_median_ms"]) - alone_median,
        "target_own_median_ms": OWN_MEDIAN_TARGET_MS,
        "pass": float(remediated["own_median_ms"]) <= OWN_MEDIAN_TARGET_MS,
    }


def compile_cost() -> float:
    """Milliseconds to compile the handler and mlwarden from source (a cold start without .pyc files)."""
    sources = [(path, path.read_text()) for path in [HANDLER, *sorted(CORE.glob("*.py"))]]
    runs = []
    for _ in range(7):
        start = time.perf_counter()
        for path, text in sources:
            compile(text, str(path), "exec", dont_inherit=True)
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs)


# --- report --------------------------------------------------------------------------------------------


def figures(rounds: int, events: int, progress: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    samples = cold(rounds, progress)
    wall = {name: statistics.median(s.wall_ms for s in runs) for name, runs in samples.items()}
    rss = {name: statistics.median(s.maxrss_mb for s in runs) for name, runs in samples.items()}

    def paired(name: str, field: str) -> float:
        """Median of the per-round ratios: each round's processes ran back to back, so drift cancels."""
        pairs = zip(samples[name], samples["bare boto3"], strict=True)
        return statistics.median(float(getattr(a, field)) / float(getattr(b, field)) for a, b in pairs)

    compile_ms = compile_cost()
    handlers: dict[str, dict[str, Any]] = {}
    for handler in HANDLER_NAMES:
        tracing = variant_name(handler, tracing=True)
        cold_ratio = paired(handler, "wall_ms")
        memory_ratio = paired(handler, "maxrss_mb")
        handlers[handler] = {
            "median_ms": wall[handler],
            "ratio": cold_ratio,
            "ratio_of_medians": wall[handler] / wall["bare boto3"],
            "pass": cold_ratio <= COLD_RATIO_TARGET,
            "cpu_ratio": paired(handler, "cpu_ms"),
            "tracing_median_ms": wall[tracing],
            "tracing_ratio": paired(tracing, "wall_ms"),
            "memory_median_mb": rss[handler],
            "memory_ratio": memory_ratio,
            "memory_pass": memory_ratio <= MEMORY_RATIO_TARGET,
            "tracing_memory_median_mb": rss[tracing],
            "tracing_memory_ratio": paired(tracing, "maxrss_mb"),
        }
    gc.collect()
    warm_figures = warm(events, progress) if events else None
    return {
        "cold_start": {
            "processes_each": rounds,
            "bare_boto3_median_ms": wall["bare boto3"],
            "bare_boto3_median_mb": rss["bare boto3"],
            "target_ratio": COLD_RATIO_TARGET,
            "memory_target_ratio": MEMORY_RATIO_TARGET,
            "pass": all(h["pass"] for h in handlers.values()),
            "memory_pass": all(h["memory_pass"] for h in handlers.values()),
            "compile_from_source_ms": compile_ms,
            "handlers": handlers,
        },
        "warm": warm_figures,
        "environment": {
            "python": platform.python_version(),
            "boto3": importlib.metadata.version("boto3"),
            "botocore": importlib.metadata.version("botocore"),
            "aws-lambda-powertools": importlib.metadata.version("aws-lambda-powertools"),
            "cpus": os.cpu_count(),
            "seconds": round(time.perf_counter() - started, 1),
        },
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def table(f: dict[str, Any]) -> str:
    c, w, env = f["cold_start"], f["warm"], f["environment"]
    rows = [("figure", "measured", "target", "")]
    for handler, h in c["handlers"].items():
        rows += [
            (
                f"cold start, {handler} / bare boto3",
                f"{h['ratio']:.3f}  ({h['median_ms']:.0f} / {c['bare_boto3_median_ms']:.0f} ms)",
                f"<= {c['target_ratio']}",
                verdict(h["pass"]),
            ),
            ("  CPU time / bare boto3 (info)", f"{h['cpu_ratio']:.3f}", "-", ""),
            (
                "  tracing on / bare boto3 (info)",
                f"{h['tracing_ratio']:.3f}  ({h['tracing_median_ms']:.0f} ms)",
                "-",
                "",
            ),
            (
                "  peak memory / bare boto3",
                f"{h['memory_ratio']:.3f}  ({h['memory_median_mb']:.1f} / {c['bare_boto3_median_mb']:.1f} MB)",
                f"<= {c['memory_target_ratio']}",
                verdict(h["memory_pass"]),
            ),
            (
                "  peak memory, tracing on (info)",
                f"{h['tracing_memory_ratio']:.3f}  ({h['tracing_memory_median_mb']:.1f} MB)",
                "-",
                "",
            ),
        ]
    rows.append(("compiling mlwarden + handler (info)", f"{c['compile_from_source_ms']:.1f} ms", "-", ""))
    if w is not None:
        r, k = w["remediated"], w["compliant"]
        rows += [
            (
                "warm remediated event, own code",
                f"median {r['own_median_ms']:.3f} ms, p95 {r['own_p95_ms']:.3f} ms",
                f"median <= {w['target_own_median_ms']} ms",
                verdict(w["pass"]),
            ),
            (
                f"  total with {REMEDIATED_CALLS} stubbed calls (info)",
                f"median {r['total_median_ms']:.3f} ms, p95 {r['total_p95_ms']:.3f} ms",
                "-",
                "",
            ),
            (
                "  cross-check: total - calls alone",
                f"{w['own_median_by_subtraction_ms']:.3f} ms  "
                f"(calls alone {w['stubbed_calls_alone_median_ms']:.3f} ms)",
                "-",
                "",
            ),
            (
                "warm compliant event, own code (info)",
                f"median {k['own_median_ms']:.3f} ms, p95 {k['own_p95_ms']:.3f} ms",
                "-",
                "",
            ),
            (
                f"  total with {COMPLIANT_CALLS} stubbed calls (info)",
                f"median {k['total_median_ms']:.3f} ms, p95 {k['total_p95_ms']:.3f} ms",
                "-",
                "",
            ),
        ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {t:<{widths[2]}}  {v}".rstrip() for a, b, t, v in rows]
    lines.insert(1, "-" * len(lines[0]))
    notes = [
        "",
        f"Cold start and memory: {c['processes_each']} fresh processes per variant (bare boto3, each handler with "
        "tracing off and on), interleaved with a rotating order; ratio = median of the per-round ratios, times in "
        "brackets = medians; each process imports the handler and creates the first client (S3, as the bare side); "
        "wall time from spawn to exit seen by the parent, CPU time (user + system) and peak RSS from wait4(). "
        "Lambda's environment variables and fake credentials; bytecode cached for every variant. On a shared "
        "machine wall-time ratios drift with the load, CPU-time ratios much less.",
    ]
    if w is not None:
        notes.append(
            f"Warm (block_public_s3): {w['events_each']} events of each kind, interleaved, in one process, event "
            f"{w['event']}; every AWS call answered by a botocore Stubber; own code = handler time minus time inside "
            "the clients' _make_api_call. Logger (stderr) and Metrics (stdout) output went to /dev/null during the "
            "timing loops."
        )
    notes += [
        f"Python {env['python']}, boto3 {env['boto3']}, botocore {env['botocore']}, "
        f"Powertools {env['aws-lambda-powertools']}, {env['cpus']} CPUs, {env['seconds']} s.",
        "Exit status 0: benchmarks inform, they do not gate.",
    ]
    width = max(100, len(lines[0]))
    wrapped = [textwrap.fill(note, width=width, break_on_hyphens=False) for note in notes]
    return "\n".join(lines + wrapped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--rounds", type=int, default=15, help="fresh processes per side (default 15)")
    parser.add_argument(
        "--events", type=int, default=2000, help="warm events of each kind (default 2000; 0: cold start only)"
    )
    args = parser.parse_args(argv)
    sys.dont_write_bytecode = True  # write no __pycache__ into the repository from this process

    def progress(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    result = figures(max(1, args.rounds), max(0, args.events), progress)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
