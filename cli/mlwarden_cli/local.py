"""`mlwarden local init`: the template's stateful resources on a local emulator, and their variables.

Read generically from template.yaml, so a table or topic added there is picked up with no change
here: every `AWS::DynamoDB::Table` (key schema, attribute definitions, indexes, billing, TTL) and
every `AWS::SNS::Topic` (name, FIFO) is created on the endpoint AWS_ENDPOINT_URL names, unless it
exists already; then one `export NAME=VALUE` line is printed for each function environment
variable that `!Ref`s or `!GetAtt`s one of them (OUTCOME_TABLE, ALERT_TOPIC_ARN, EXEMPTION_TABLE,
...). Running it again creates nothing and prints the same lines.

It refuses (exit 2) unless every client it builds talks to AWS_ENDPOINT_URL and that endpoint is
not one of AWS's own: it never touches a real account. Encryption settings (KMS keys) are left out:
the emulator does not need them.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from mlwarden_cli.template import DEFAULT_ACCOUNT, STACK_NAME, Template

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TABLE = "AWS::DynamoDB::Table"
TOPIC = "AWS::SNS::Topic"
# Endpoints that are AWS itself, whatever AWS_ENDPOINT_URL says.
_AWS_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws", ".c2s.ic.gov", ".sc2s.sgov.gov")
# CreateTable's parameters taken from the template as they are (keys of AWS::DynamoDB::Table's Properties).
_TABLE_PROPERTIES = (
    "AttributeDefinitions",
    "KeySchema",
    "BillingMode",
    "ProvisionedThroughput",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
)

# What the emulator needs of each kind; the rest (encryption, tags, recovery) is the deployment's business.
_USED_PROPERTIES = {
    TABLE: frozenset({"TableName", "TimeToLiveSpecification", *_TABLE_PROPERTIES}),
    TOPIC: frozenset({"TopicName", "FifoTopic", "ContentBasedDeduplication"}),
}


class LocalInitError(RuntimeError):
    """The template or the emulator's state does not allow creating a resource; exit 1."""


@dataclass(frozen=True)
class Created:
    """One resource as it exists on the emulator: what `!Ref` and `!GetAtt` give for it."""

    logical_id: str
    ref: str
    attributes: Mapping[str, str]
    created: bool  # False: it existed already


def run_local_init(template: Template) -> int:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "").strip()
    refusal = _refusal(endpoint)
    if refusal:
        print(f"mlwarden local init: {refusal}; it never touches a real account", file=sys.stderr)
        return EXIT_USAGE
    try:
        exports = create_local_resources(template, endpoint)
    except _Refused as err:
        print(f"mlwarden local init: {err}; it never touches a real account", file=sys.stderr)
        return EXIT_USAGE
    except NoCredentialsError:
        print(
            "mlwarden local init: no AWS credentials; for an emulator any will do "
            "(AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except (LocalInitError, ClientError, BotoCoreError) as err:
        print(f"mlwarden local init: {err}", file=sys.stderr)
        return EXIT_FAILED
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
    return EXIT_OK


class _Refused(RuntimeError):
    """A client would not talk to the emulator."""


def _refusal(endpoint: str) -> str | None:
    if not endpoint:
        return "AWS_ENDPOINT_URL is not set: it names the emulator to create the resources on"
    host = (urlsplit(endpoint).hostname or "").lower()
    if not host:
        return f"AWS_ENDPOINT_URL={endpoint!r} is not a URL"
    if host.endswith(_AWS_HOST_SUFFIXES) or host in {suffix.lstrip(".") for suffix in _AWS_HOST_SUFFIXES}:
        return f"AWS_ENDPOINT_URL={endpoint!r} is AWS itself, not an emulator"
    return None


def create_local_resources(template: Template, endpoint: str) -> dict[str, str]:
    """Create the template's tables and topics on `endpoint`; the variables that name them, sorted."""
    from mlwarden import clients  # noqa: PLC0415 - after the endpoint was checked

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"

    def client(service: str) -> Any:
        aws = clients.client(service, region)
        if aws.meta.endpoint_url.rstrip("/") != endpoint.rstrip("/"):
            # AWS_ENDPOINT_URL_<SERVICE>, AWS_IGNORE_CONFIGURED_ENDPOINT_URLS or a profile would send it elsewhere.
            raise _Refused(f"the {service} client would use {aws.meta.endpoint_url}, not AWS_ENDPOINT_URL={endpoint}")
        return aws

    created: dict[str, Created] = {}
    for logical_id, resource in template.resources.items():
        kind = resource.get("Type") if isinstance(resource, Mapping) else None
        if kind not in (TABLE, TOPIC) or not template.deployed(logical_id):
            continue
        used = _USED_PROPERTIES[kind]
        properties = _plain(
            template, logical_id, {k: v for k, v in (resource.get("Properties") or {}).items() if k in used}, region
        )
        if kind == TABLE:
            created[logical_id] = _table(client("dynamodb"), logical_id, properties)
        else:
            created[logical_id] = _topic(client("sns"), logical_id, properties)
        state = "created" if created[logical_id].created else "exists"
        print(f"{kind} {logical_id}: {created[logical_id].ref} ({state})", file=sys.stderr)
    return environment_for(template, created)


def environment_for(template: Template, created: Mapping[str, Created]) -> dict[str, str]:
    """Each function variable that refers to a created resource, with the value it has on the emulator."""
    exports: dict[str, str] = {}
    for function in template.functions:
        for name, raw in function.environment.items():
            value = _value_of(template.chosen(raw), created)
            if value is None:
                continue
            if exports.setdefault(name, value) != value:
                raise LocalInitError(f"{name} refers to different resources in different functions")
    return dict(sorted(exports.items()))


def _value_of(reference: Any, created: Mapping[str, Created]) -> str | None:
    if not isinstance(reference, Mapping) or len(reference) != 1:
        return None
    ((function, argument),) = reference.items()
    if function == "Ref" and isinstance(argument, str) and argument in created:
        return created[argument].ref
    if function == "Fn::GetAtt" and isinstance(argument, list) and len(argument) == 2 and argument[0] in created:
        return created[argument[0]].attributes.get(str(argument[1]))
    return None


def _plain(template: Template, logical_id: str, value: Any, region: str) -> Any:
    """Properties with the intrinsics resolved from the parameters' defaults; AWS::NoValue drops a key."""
    value = template.chosen(value)
    if isinstance(value, Mapping):
        if len(value) == 1 and (next(iter(value)) == "Ref" or next(iter(value)).startswith("Fn::")):
            if value == {"Ref": "AWS::NoValue"}:
                return None
            resolved = template.resolve(value, DEFAULT_ACCOUNT, region)
            if resolved is None:
                raise LocalInitError(f"{logical_id}: cannot resolve {value} without deploying")
            return resolved
        plain = {key: _plain(template, logical_id, item, region) for key, item in value.items()}
        return {key: item for key, item in plain.items() if item is not None}
    if isinstance(value, list):
        return [item for item in (_plain(template, logical_id, item, region) for item in value) if item is not None]
    return value


def _local_name(logical_id: str, explicit: Any) -> str:
    # CloudFormation names an unnamed resource <stack>-<logical id>-<random suffix>; locally without the suffix.
    return str(explicit) if explicit else f"{STACK_NAME}-{logical_id}"


def _table(dynamodb: Any, logical_id: str, properties: Mapping[str, Any]) -> Created:
    name = _local_name(logical_id, properties.get("TableName"))
    wanted = {key: properties[key] for key in _TABLE_PROPERTIES if key in properties}
    if wanted.get("BillingMode", "PROVISIONED") == "PAY_PER_REQUEST":
        wanted.pop("ProvisionedThroughput", None)
    try:
        table = dynamodb.describe_table(TableName=name)["Table"]
        created = False
    except dynamodb.exceptions.ResourceNotFoundException:
        table = dynamodb.create_table(TableName=name, **wanted)["TableDescription"]
        created = True
    if not created and _key_schema(table.get("KeySchema")) != _key_schema(wanted.get("KeySchema")):
        raise LocalInitError(
            f"table {name} exists with another key schema than {logical_id} in the template: delete it first"
        )
    ttl = properties.get("TimeToLiveSpecification")
    if isinstance(ttl, Mapping) and str(ttl.get("Enabled")).lower() == "true":
        current = dynamodb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
        if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": str(ttl["AttributeName"])},
            )
        elif current.get("AttributeName") != ttl.get("AttributeName"):
            on = current.get("AttributeName")
            raise LocalInitError(f"table {name} has its TTL on {on}, the template on {ttl['AttributeName']}")
    attributes = {"Arn": str(table["TableArn"])}
    if table.get("LatestStreamArn"):
        attributes["StreamArn"] = str(table["LatestStreamArn"])
    return Created(logical_id, ref=name, attributes=attributes, created=created)


def _key_schema(schema: Any) -> list[tuple[str, str]]:
    return sorted((str(key.get("AttributeName")), str(key.get("KeyType"))) for key in schema or [])


def _topic(sns: Any, logical_id: str, properties: Mapping[str, Any]) -> Created:
    fifo = str(properties.get("FifoTopic", "false")).lower() == "true"
    name = _local_name(logical_id, properties.get("TopicName"))
    if fifo and not name.endswith(".fifo"):
        name += ".fifo"
    existing = None
    for page in sns.get_paginator("list_topics").paginate():
        for topic in page.get("Topics", []):
            if str(topic["TopicArn"]).rsplit(":", 1)[-1] == name:
                existing = str(topic["TopicArn"])
    attributes = {"FifoTopic": "true"} if fifo else {}
    if fifo and str(properties.get("ContentBasedDeduplication", "false")).lower() == "true":
        attributes["ContentBasedDeduplication"] = "true"
    arn = existing or str(sns.create_topic(Name=name, Attributes=attributes)["TopicArn"])
    return Created(logical_id, ref=arn, attributes={"TopicArn": arn, "TopicName": name}, created=existing is None)
