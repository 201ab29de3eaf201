"""moto server that counts every request it answers, by service and operation: the sweep benchmark's meter.

Run as `python counting_moto_server.py -H 127.0.0.1 -p PORT` (moto server's own arguments): it is moto's own
server (`moto.server.main`) with one wrapper around its WSGI application. The wrapper counts each request
before moto answers it, so a tool is charged for what it asks, answered or refused alike.

    GET  /_bench/counts   {"total": n, "by_operation": {"s3:GetBucketAcl": n, ...}}
    POST /_bench/reset    zero the counts (between tools)

Both are answered by the wrapper and never counted. moto's own API (/moto-api/) is not counted either.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import moto.server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_COUNTS: Counter[str] = Counter()
_LOCK = threading.Lock()
# "Credential=AKID/20260101/us-east-1/s3/aws4_request": the signing name is the service.
_SIGNED_SERVICE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")

# S3's REST operations, by method and the sub-resource named in the query string.
_S3_BUCKET_READS = {
    "acl": "GetBucketAcl",
    "policyStatus": "GetBucketPolicyStatus",
    "policy": "GetBucketPolicy",
    "publicAccessBlock": "GetPublicAccessBlock",
    "tagging": "GetBucketTagging",
    "location": "GetBucketLocation",
    "versioning": "GetBucketVersioning",
    "logging": "GetBucketLogging",
    "encryption": "GetBucketEncryption",
    "lifecycle": "GetBucketLifecycleConfiguration",
    "replication": "GetBucketReplication",
    "website": "GetBucketWebsite",
    "notification": "GetBucketNotificationConfiguration",
    "ownershipControls": "GetBucketOwnershipControls",
    "object-lock": "GetObjectLockConfiguration",
    "cors": "GetBucketCors",
    "accelerate": "GetBucketAccelerateConfiguration",
    "requestPayment": "GetBucketRequestPayment",
    "analytics": "ListBucketAnalyticsConfigurations",
    "inventory": "ListBucketInventoryConfigurations",
    "metrics": "ListBucketMetricsConfigurations",
    "intelligent-tiering": "ListBucketIntelligentTieringConfigurations",
}


def operation_of(environ: dict[str, Any], body: bytes) -> str:
    """`service:Operation` of one request, as far as the wire says (X-Amz-Target, Action, or S3's REST form)."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    match = _SIGNED_SERVICE.search(authorization)
    service = match.group(1) if match else "unsigned"
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return f"{service}:{target.rsplit('.', 1)[-1]}"
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    action = query.get("Action")
    if action is None and body and "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
        action = parse_qs(body.decode("utf-8", "replace")).get("Action")
    if action:
        return f"{service}:{action[0]}"
    if service == "s3":
        return f"s3:{_s3_operation(environ.get('REQUEST_METHOD', 'GET'), environ.get('PATH_INFO', '/'), query)}"
    return f"{service}:{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"


def _s3_operation(method: str, path: str, query: dict[str, list[str]]) -> str:
    if path.startswith("/v20180820/"):  # S3 Control (account-level settings)
        what = path.removeprefix("/v20180820/").split("/")[-1]
        return f"{method.capitalize()}Account{what[:1].upper()}{what[1:]}"
    parts = [part for part in path.split("/") if part]
    if not parts:
        return "ListBuckets" if method == "GET" else f"{method} /"
    if len(parts) > 1:
        return f"{method} object"
    for key in query:
        if key in _S3_BUCKET_READS:
            name = _S3_BUCKET_READS[key]
            return name if method == "GET" else name.replace("Get", method.capitalize(), 1)
    if method == "GET":
        return "ListObjects" if "list-type" not in query else "ListObjectsV2"
    return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(method, f"{method} bucket")


def _respond(start_response: Callable[..., Any], payload: dict[str, Any]) -> Iterable[bytes]:
    data = json.dumps(payload, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _counted(answer: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def call(self: DomainDispatcherApplication, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/_bench/counts":
            with _LOCK:
                return _respond(start_response, {"total": sum(_COUNTS.values()), "by_operation": dict(_COUNTS)})
        if path == "/_bench/reset":
            with _LOCK:
                _COUNTS.clear()
            return _respond(start_response, {"total": 0, "by_operation": {}})
        if not path.startswith("/moto-api/"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            operation = operation_of(environ, body)
            with _LOCK:
                _COUNTS[operation] += 1
        return answer(self, environ, start_response)

    return call


if __name__ == "__main__":
    DomainDispatcherApplication.__call__ = _counted(DomainDispatcherApplication.__call__)  # type: ignore[method-assign]
    moto.server.main()
