"""`mlwarden`: replay events through ML Warden's handlers, sweep the account, prepare a local emulator, run the demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from mlwarden import __version__
from mlwarden_cli import exempt, lint, sweep
from mlwarden_cli.dlq import LONG_POLL_SECONDS, Disposition, RedriveError, RedriveOptions, queue_region, redrive
from mlwarden_cli.replay import (
    UNUSABLE,
    HandlerSetupError,
    Replayed,
    Replayer,
    ReplayInputError,
    Unusable,
    format_table,
    read_events,
    unusable,
)
from mlwarden_cli.template import Template, TemplateError, find_template, load_template

# 1: a handler raised (or, with --from-dlq, a message stayed in the queue); 2: unusable arguments, files or events.
EXIT_OK, EXIT_HANDLER_RAISED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlwarden", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlwarden {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    replay = commands.add_parser(
        "replay",
        help="run events through the template's rules and handlers, in-process (no Docker)",
        description=(
            "Each FILE is an EventBridge event (object), a JSON array of them, or JSON Lines. AWS is reached "
            "through the standard environment (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, credentials). "
            "stdout carries only the report (with --json: one outcome line per (event, function)); logs go to "
            "stderr. Exit status: 0; 1 if a handler raised (with --from-dlq: if a message stayed in the queue); "
            "2 for unusable arguments, files or events (an unusable event is reported and skipped, the others "
            "are replayed)."
        ),
    )
    replay.add_argument("files", nargs="*", metavar="FILE", type=Path)
    replay.add_argument(
        "--from-dlq",
        metavar="QUEUE_URL",
        help=(
            "re-drive the events in a dead-letter queue until it reports empty; a message is deleted only after "
            "the function it names reached a decision other than ignored"
        ),
    )
    replay.add_argument(
        "--hold-queue",
        metavar="QUEUE_URL",
        help=(
            "with --from-dlq: move each message that was not handled (ignored, unroutable, unreadable, raised) to "
            "this queue for a person; without it such messages stay in the dead-letter queue and exit is 1"
        ),
    )
    replay.add_argument("--max-messages", type=int, metavar="N", help="with --from-dlq: stop after N messages")
    replay.add_argument(
        "--wait-seconds",
        type=int,
        choices=range(1, LONG_POLL_SECONDS + 1),
        default=LONG_POLL_SECONDS,
        metavar="S",
        help=f"with --from-dlq: long-poll wait, 1-{LONG_POLL_SECONDS} s (default {LONG_POLL_SECONDS})",
    )
    replay.add_argument("--json", action="store_true", help="one JSON object per line per (event, function)")
    replay.add_argument("--mode", choices=("enforce", "dry-run"), help="override REMEDIATION_MODE")
    replay.add_argument("--template", type=Path, help="template.yaml to route with (default: found from cwd)")

    local = commands.add_parser("local", help="prepare a local AWS emulator for replay, exempt and demo")
    local_commands = local.add_subparsers(dest="local_command", required=True)
    local_init = local_commands.add_parser(
        "init",
        help="create the template's tables and topics on AWS_ENDPOINT_URL; print their export lines",
        description=(
            "Creates every AWS::DynamoDB::Table and AWS::SNS::Topic that template.yaml declares on the emulator "
            "AWS_ENDPOINT_URL points at (idempotently), and prints one `export NAME=VALUE` line per environment "
            'variable the functions read for them: eval "$(mlwarden local init)". Refuses (exit 2) without '
            "AWS_ENDPOINT_URL: it never touches a real account."
        ),
    )
    local_init.add_argument("--template", type=Path, help="template.yaml to read (default: found from cwd)")

    demo = commands.add_parser("demo", help="run ML Warden against a local AWS emulator (moto server)")
    demo.add_argument("--template", type=Path, help="template.yaml to route with (default: found from cwd)")
    exempt.add_parsers(commands)
    lint.add_parser(commands)
    sweep.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "exempt":
        return exempt.run(args)
    if args.command == "lint":
        return lint.run(args)
    try:
        template = load_template(args.template or find_template())
    except TemplateError as err:
        print(f"mlwarden: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "sweep":
        return sweep.run(args, template)
    if args.command == "demo":
        from mlwarden_cli.demo import run_demo  # noqa: PLC0415 - moto server only when the demo runs

        return run_demo(template)
    if args.command == "local":
        from mlwarden_cli.local import run_local_init  # noqa: PLC0415 - AWS clients only for this command

        return run_local_init(template)
    if args.from_dlq:
        if args.files:
            print("mlwarden replay: give FILEs or --from-dlq, not both", file=sys.stderr)
            return EXIT_USAGE
        return _redrive(template, args)
    if args.hold_queue:
        print("mlwarden replay: --hold-queue goes with --from-dlq", file=sys.stderr)
        return EXIT_USAGE
    if not args.files:
        print("mlwarden replay: give at least one FILE, or --from-dlq QUEUE_URL", file=sys.stderr)
        return EXIT_USAGE
    return _replay(template, args.files, args.mode, args.json)


def _redrive(template: Template, args: argparse.Namespace) -> int:
    from mlwarden import clients  # noqa: PLC0415 - the SQS client only when re-driving

    replayer = Replayer(template, mode=args.mode)
    queue_url: str = args.from_dlq
    sqs = clients.client("sqs", queue_region(queue_url))
    options = RedriveOptions(hold_queue_url=args.hold_queue, limit=args.max_messages, wait_seconds=args.wait_seconds)
    results: list[Replayed] = []
    kept = held = 0
    try:
        for redriven in redrive(queue_url, replayer, sqs, options):
            results.extend(redriven.results)
            kept += redriven.disposition is Disposition.KEPT
            held += redriven.disposition is Disposition.HELD
            if args.json:
                print(json.dumps(redriven.as_json(), sort_keys=True), flush=True)
            elif redriven.problem:
                print(f"message {redriven.message_id}: {redriven.problem}", file=sys.stderr)
    except HandlerSetupError as err:
        print(f"mlwarden replay: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ClientError as err:
        print(f"mlwarden replay: cannot re-drive {queue_url}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except RedriveError as err:
        print(f"mlwarden replay: {err}", file=sys.stderr)
        return EXIT_USAGE
    if not args.json:
        print(format_table(results))
        print(f"{len(results)} result(s); {held} message(s) moved to the hold queue; {kept} left in the queue")
    return EXIT_HANDLER_RAISED if kept else EXIT_OK


def _replay(template: Template, files: list[Path], mode: str | None, as_json: bool) -> int:
    batches: list[tuple[str, list[Any]]] = []
    for path in files:
        try:
            events = read_events(path)
        except ReplayInputError as err:
            print(f"mlwarden replay: {err}", file=sys.stderr)
            return EXIT_USAGE
        batches.append((str(path), events))

    replayer = Replayer(template, mode=mode)
    results: list[Replayed] = []
    for name, events in batches:
        for index, event in enumerate(events):
            source = name if len(events) == 1 else f"{name}:{index + 1}"
            if isinstance(event, Unusable):
                print(f"mlwarden replay: {source}: unusable input, skipped: {event.reason}", file=sys.stderr)
                replayed = [unusable(source, event.reason)]
            else:
                try:
                    replayed = replayer.replay(event, source)
                except HandlerSetupError as err:
                    print(f"mlwarden replay: {err}", file=sys.stderr)
                    return EXIT_USAGE
            results.extend(replayed)
            if as_json:
                for result in replayed:
                    print(json.dumps(result.as_json(), sort_keys=True), flush=True)
    if not as_json:
        print(format_table(results))
    if any(result.outcome == UNUSABLE for result in results):
        return EXIT_USAGE
    return EXIT_HANDLER_RAISED if any(result.raised for result in results) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
