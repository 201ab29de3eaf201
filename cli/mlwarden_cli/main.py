"""`mlwarden`: replay events through ML Warden's handlers, or run the local demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlwarden_cli.replay import HandlerSetupError, Replayed, Replayer, ReplayInputError, format_table, read_events
from mlwarden_cli.template import Template, TemplateError, find_template, load_template

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
    replay.add_argument("files", nargs="+", metavar="FILE", type=Path)
    replay.add_argument("--json", action="store_true", help="one JSON object per line per (event, function)")
    replay.add_argument("--mode", choices=("enforce", "dry-run"), help="override REMEDIATION_MODE")
    replay.add_argument("--template", type=Path, help="template.yaml to route with (default: found from cwd)")

    demo = commands.add_parser("demo", help="run ML Warden against a local AWS emulator (moto server)")
    demo.add_argument("--template", type=Path, help="template.yaml to route with (default: found from cwd)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        template = load_template(args.template or find_template())
    except TemplateError as err:
        print(f"mlwarden: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "demo":
        from mlwarden_cli.demo import run_demo  # noqa: PLC0415 - moto server only when the demo runs

        return run_demo(template)
    return _replay(template, args.files, args.mode, args.json)


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
