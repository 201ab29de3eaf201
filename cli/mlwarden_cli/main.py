"""`mlwarden`: replay events through ML Warden's handlers, or run the local demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from botocore.exceptions import ClientError

from mlwarden_cli import exempt, lint
from mlwarden_cli.dlq import queue_region, redrive
from mlwarden_cli.replay import HandlerSetupError, Replayed, Replayer, ReplayInputError, format_table, read_events
from mlwarden_cli.template import Template, TemplateError, find_template, load_template

# 1: a handler raised (or, with --from-dlq, a message stayed in the queue); 2: unusable arguments or files.
EXIT_OK, EXIT_HANDLER_RAISED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlwarden", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    replay = commands.add_parser(
        "replay",
        help="run events through the template's rules and handlers, in-process (no Docker)",
        description=(
            "Each FILE is an EventBridge event (object), a JSON array of them, or JSON Lines. AWS is reached "
            "through the standard environment (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, credentials). "
            "Exit status: 0, 1 if a handler raised, 2 for unusable arguments or unreadable files."
        ),
    )
    replay.add_argument("files", nargs="*", metavar="FILE", type=Path)
    replay.add_argument(
        "--from-dlq",
        metavar="QUEUE_URL",
        help="re-drive the events in a dead-letter queue; each message is deleted only after its handler succeeded",
    )
    replay.add_argument("--max-messages", type=int, metavar="N", help="with --from-dlq: stop after N messages")
    replay.add_argument("--json", action="store_true", help="one JSON object per line per (event, function)")
    replay.add_argument("--mode", choices=("enforce", "dry-run"), help="override REMEDIATION_MODE")
    replay.add_argument("--template", type=Path, help="template.yaml to route with (default: found from cwd)")

    demo = commands.add_parser("demo", help="run ML Warden against a local AWS emulator (moto server)")
    demo.add_argument("--template", type=Path, help="template.yaml to route with (default: found from cwd)")
    exempt.add_parsers(commands)
    lint.add_parser(commands)
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
    if args.command == "demo":
        from mlwarden_cli.demo import run_demo  # noqa: PLC0415 - moto server only when the demo runs

        return run_demo(template)
    if args.from_dlq:
        if args.files:
            print("mlwarden replay: give FILEs or --from-dlq, not both", file=sys.stderr)
            return EXIT_USAGE
        return _redrive(template, args.from_dlq, args.mode, args.json, args.max_messages)
    if not args.files:
        print("mlwarden replay: give at least one FILE, or --from-dlq QUEUE_URL", file=sys.stderr)
        return EXIT_USAGE
    return _replay(template, args.files, args.mode, args.json)


def _redrive(template: Template, queue_url: str, mode: str | None, as_json: bool, limit: int | None) -> int:
    from mlwarden import clients  # noqa: PLC0415 - the SQS client only when re-driving

    replayer = Replayer(template, mode=mode)
    sqs = clients.client("sqs", queue_region(queue_url))
    results: list[Replayed] = []
    kept = 0
    try:
        for redriven in redrive(queue_url, replayer, sqs, limit):
            results.extend(redriven.results)
            kept += 0 if redriven.deleted else 1
            if as_json:
                print(
                    json.dumps(
                        {
                            "message_id": redriven.message_id,
                            "deleted": redriven.deleted,
                            "problem": redriven.problem,
                            "results": [r.as_json() for r in redriven.results],
                        },
                        sort_keys=True,
                    ),
                    flush=True,
                )
            elif redriven.problem:
                print(f"message {redriven.message_id}: {redriven.problem}", file=sys.stderr)
    except HandlerSetupError as err:
        print(f"mlwarden replay: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ClientError as err:
        print(f"mlwarden replay: cannot read {queue_url}: {err}", file=sys.stderr)
        return EXIT_USAGE
    if not as_json:
        print(format_table(results))
        print(f"{len(results)} result(s); {kept} message(s) left in the queue")
    return EXIT_HANDLER_RAISED if kept else EXIT_OK


def _replay(template: Template, files: list[Path], mode: str | None, as_json: bool) -> int:
    batches: list[tuple[str, list[object]]] = []
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
    return EXIT_HANDLER_RAISED if any(result.raised for result in results) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
