"""`mlwarden sweep`: evaluate every resource the checks know in the current account, as the event path would.

    mlwarden sweep [--mode dry-run|enforce] [--check NAME]... [--region R]... [--json | --sarif] [--out FILE]
                   [--fail-on SEVERITY] [--stats]

Credentials, region and endpoint come from the standard environment (AWS_PROFILE, AWS_REGION,
AWS_ENDPOINT_URL, ...), like `mlwarden replay`; the account is the one STS GetCallerIdentity names. Each
check runs with its function's environment from template.yaml, overridden by the process environment of
the same name: set OUTCOME_TABLE, EXEMPTION_TABLE and ALERT_TOPIC_ARN to the deployed stack's and the sweep
uses the deployed exemption registry, records fixes and sends alerts (once per resource and findings: a
second sweep over unchanged resources sends nothing new). Without ALERT_TOPIC_ARN the sweep only reports:
it sends no alert. Without OUTCOME_TABLE nothing is remembered between sweeps.

The default mode is dry-run: nothing is changed. `--mode enforce` fixes what the event path would fix.
Default checks: every check that can list its resources (the others are named on stderr); default region:
the configured one. Global resources (S3 buckets' account block, IAM) are read in the first region.

Output (stdout, or --out FILE): a report grouped by severity, CRITICAL first, with each resource, the rules it
failed and the fix; --json: one outcome per line (the keys of `replay --json`, event_id null, plus `check`);
--sarif: one SARIF 2.1.0 log. A progress bar per check goes to stderr when it is a terminal; --stats prints
the HTTP requests sent per operation to stderr. Logs go to stderr at WARNING unless POWERTOOLS_LOG_LEVEL says.

Exit status: 0 when nothing at or above --fail-on (default HIGH) was found, 1 when something was or when a
resource or a listing could not be read (it may hide anything), 2 for unusable arguments (an unknown check, a region AWS
does not have, a bad severity, --json with --sarif, an invalid configuration variable, no credentials).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import checks, clients
from mlwarden.checks import CHECK_NAMES, CheckUnit
from mlwarden.inventory import DEFAULT_CONCURRENCY, Inventory
from mlwarden.observability import logger
from mlwarden.outcomes import Outcome, OutcomeKind, Severity
from mlwarden.rules.policy_analysis import SEVERITY_ORDER, rank
from mlwarden.settings import Settings, SettingsError, load_settings
from mlwarden.sweep import Progress, Summary, new_sweep_id, sweep_check
from mlwarden_cli import sarif as sarif_log
from mlwarden_cli.replay import Replayed, Replayer, environment_set
from mlwarden_cli.template import FunctionSpec, Template

EXIT_CLEAN, EXIT_FOUND, EXIT_UNUSABLE = 0, 1, 2
# Outcomes that are not findings: the resource is as it should be, or there was nothing to evaluate.
NOT_FOUND = (OutcomeKind.COMPLIANT, OutcomeKind.IGNORED)
# Stands in for the alert topic when none is configured: settings need one, and `send_alerts=False` keeps
# the pipeline from ever publishing to it.
_NO_TOPIC = "arn:aws:sns:{region}:{account}:mlwarden-sweep-sends-no-alerts"


class Unusable(ValueError):
    """An argument or the configuration cannot be used: exit 2."""


@dataclass(frozen=True)
class SweptCheck:
    """One check as this sweep runs it: its unit, its function's environment and the settings read from it."""

    unit: CheckUnit
    function: str | None  # the template function that runs the check on events
    environment: dict[str, str]
    settings: Settings


def add_parser(commands: Any) -> None:
    """Register `sweep` on the CLI's subcommands."""
    parser = commands.add_parser(
        "sweep",
        help="evaluate every resource the checks know in the current account (dry-run unless asked)",
        description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--mode", choices=("dry-run", "enforce"), default="dry-run", help="dry-run (default) changes nothing"
    )
    parser.add_argument(
        "--check",
        action="append",
        choices=CHECK_NAMES,
        metavar="NAME",
        help=f"only this check (repeatable): {', '.join(CHECK_NAMES)}; default: every check that can sweep",
    )
    parser.add_argument("--region", action="append", metavar="R", help="sweep this region (repeatable)")
    sarif_log.add_output_options(parser, json_help="one outcome object per line")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the report, JSON or SARIF to FILE")
    parser.add_argument("--stats", action="store_true", help="print the HTTP requests sent per operation to stderr")
    parser.add_argument(
        "--asff",
        type=Path,
        metavar="FILE",
        help="also write the findings as AWS Security Hub findings (ASFF JSON, a list) to FILE, to import yourself",
    )
    parser.add_argument("--template", type=Path, help="template.yaml to read the functions' environment from")


def run(args: argparse.Namespace, template: Template) -> int:
    try:
        regions = _regions(args.region)
        units = _units(args.check)
        out = _open(args.out)
    except Unusable as err:
        print(f"mlwarden sweep: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    counter = clients.RequestCounter() if args.stats else None
    try:
        outcomes, summary = _run_sweep(args, template, regions, units, out=out, counter=counter)
    except Unusable as err:
        print(f"mlwarden sweep: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    finally:
        if out is not sys.stdout:
            out.close()
    if counter is not None:
        print(format_stats(counter, summary), file=sys.stderr)
    if args.asff is not None:
        write_asff(outcomes, args.asff)
    threshold = rank(Severity(args.fail_on))
    # A resource that could not be read or listed may hide anything: never "nothing found", whatever --fail-on.
    over = [o for o in found(outcomes) if rank(o.severity) >= threshold or o.outcome is OutcomeKind.FAILED]
    return EXIT_FOUND if over else EXIT_CLEAN


def _run_sweep(
    args: argparse.Namespace,
    template: Template,
    regions: list[str],
    units: list[CheckUnit],
    *,
    out: IO[str],
    counter: clients.RequestCounter | None,
) -> tuple[list[Outcome], Summary]:
    with ExitStack() as stack:
        stack.enter_context(_quiet_logs())
        # The pipeline prints nothing but Powertools' EMF metric lines, which have nowhere to go outside Lambda.
        stack.enter_context(redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        stack.enter_context(clients.sweep_clients(counter, concurrency=DEFAULT_CONCURRENCY))
        account = _account(regions[0])
        swept = [_prepare(unit, template, args.mode, account, regions[0]) for unit in units]
        summary = Summary(new_sweep_id())
        write_line = _json_writer(out) if args.json else None
        outcomes = list(_sweep(swept, regions, account, summary, write_line))
    if args.sarif:
        print(json.dumps(sarif(outcomes), indent=2), file=out)
    elif not args.json:
        print(report(outcomes, summary, mode=args.mode, account=account, regions=regions, swept=swept), file=out)
    return outcomes, summary


# --- arguments and configuration -------------------------------------------------------------------------


def _regions(asked: list[str] | None) -> list[str]:
    session = boto3.session.Session()
    if not asked:
        if not session.region_name:
            raise Unusable("no region configured: set AWS_REGION (or AWS_DEFAULT_REGION) or give --region")
        asked = [session.region_name]
    known = {
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("sts", partition_name=partition)
    }
    unknown = [region for region in asked if region not in known]
    if unknown:
        raise Unusable(f"unknown region {', '.join(map(repr, unknown))}: not a region of any AWS partition")
    return list(dict.fromkeys(asked))


def _units(asked: list[str] | None) -> list[CheckUnit]:
    """The asked checks (argparse has refused unknown names), or every check that can list its resources."""
    units = []
    for name in dict.fromkeys(asked or CHECK_NAMES):
        try:
            units.append(checks.load(name))
        except KeyError:  # the check module has no UNIT yet: it cannot list its resources (argparse knows the name)
            if asked:
                raise Unusable(f"check {name} cannot sweep yet: it has no inventory (no UNIT)") from None
            print(f"mlwarden sweep: {name} skipped: it cannot list its resources yet", file=sys.stderr)
    return units


def _open(path: Path | None) -> IO[str]:
    if path is None:
        return sys.stdout
    try:
        return path.open("w", encoding="utf-8")
    except OSError as err:
        raise Unusable(f"cannot write {path}: {err.strerror}") from err


def _account(region: str) -> str:
    try:
        return str(clients.client("sts", region).get_caller_identity()["Account"])
    except (ClientError, BotoCoreError) as err:
        raise Unusable(f"cannot identify the account (STS GetCallerIdentity): {err}") from err


def _prepare(unit: CheckUnit, template: Template, mode: str, account: str, region: str) -> SweptCheck:
    """The check's settings as its deployed function reads them, the process environment taking precedence."""
    function = next((f for f in template.functions if f.handler_file.parent.name == unit.name), None)
    environment = _function_environment(template, function, mode, account, region)
    no_topic = not environment.get("ALERT_TOPIC_ARN")
    if no_topic:
        environment["ALERT_TOPIC_ARN"] = _NO_TOPIC.format(region=region, account=account)
    try:
        settings = load_settings({**os.environ, **environment})
    except SettingsError as err:
        raise Unusable(f"{unit.name}: {err}") from err
    if no_topic:
        settings = replace(settings, send_alerts=False)
    return SweptCheck(unit, function.logical_id if function else None, environment, settings)


def _function_environment(
    template: Template, function: FunctionSpec | None, mode: str, account: str, region: str
) -> dict[str, str]:
    if function is None:
        return {"REMEDIATION_MODE": mode}
    replayer = Replayer(template, mode=mode)
    replayer.account, replayer.region = account, region
    environment = replayer.function_environment(function)
    if "AWS_ENDPOINT_URL" not in os.environ:
        # The template declares it empty (for `sam local`); unset, the standard configuration decides.
        environment.pop("AWS_ENDPOINT_URL", None)
    return environment


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """One INFO line per resource would bury the progress bars: WARNING unless POWERTOOLS_LOG_LEVEL says."""
    previous = logger.log_level
    logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL") or "WARNING")
    try:
        yield
    finally:
        logger.setLevel(previous)


# --- the sweep -------------------------------------------------------------------------------------------


def _sweep(
    swept: list[SweptCheck],
    regions: list[str],
    account: str,
    summary: Summary,
    write_line: Callable[[Outcome, SweptCheck], None] | None,
) -> Iterator[Outcome]:
    """mlwarden.sweep.run_sweep, with each check in its own function's environment and settings."""
    bars = ProgressBars(sys.stderr)
    for index, region in enumerate(regions):
        # One inventory per region, shared by the checks: a bulk tag read serves every check that needs it.
        inventory = Inventory(account=account, region=region, first_region=index == 0)
        for check in swept:
            with environment_set(check.environment):
                progress = bars.for_check(f"{check.unit.name} {region}")
                for outcome in sweep_check(
                    check.unit, inventory, check.settings, summary.sweep_id, summary=summary, progress=progress
                ):
                    if write_line is not None:
                        write_line(outcome, check)
                    yield outcome


class ProgressBars:
    """A bar per check on a terminal; nothing at all when the stream is not one."""

    WIDTH = 30

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.active = stream.isatty()

    def for_check(self, label: str) -> Progress | None:
        if not self.active:
            return None
        shown = [-1]

        def draw(_check: str, done: int, total: int) -> None:
            filled = self.WIDTH if total == 0 else self.WIDTH * done // total
            if filled == shown[0] and done not in (0, total):
                return
            shown[0] = filled
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            end = "\n" if done == total else ""
            self.stream.write(f"\r{label:<40} [{bar}] {done}/{total}{end}")
            self.stream.flush()

        return draw


# --- output ----------------------------------------------------------------------------------------------


def json_line(outcome: Outcome, function: str | None) -> dict[str, Any]:
    """`replay --json`'s keys for one swept resource (no event: event_id null), plus `check` and `controls`."""
    trigger = outcome.trigger
    replayed = Replayed(
        source=f"sweep:{trigger.account}:{trigger.region}",
        event_id=None,
        function=function,
        outcome=outcome.outcome.value,
        resource=outcome.resource,
        severity=outcome.severity.value,
        actions=outcome.actions,
        alerted=outcome.alerted,
        reason=outcome.reason,
        redelivered=outcome.redelivered,
    )
    return {**replayed.as_json(), "controls": list(outcome.controls), "check": outcome.check}


def _json_writer(out: IO[str]) -> Callable[[Outcome, SweptCheck], None]:
    def write(outcome: Outcome, check: SweptCheck) -> None:
        out.write(json.dumps(json_line(outcome, check.function), sort_keys=True) + "\n")
        out.flush()

    return write


def write_asff(outcomes: list[Outcome], path: Path) -> None:
    """The findings Security Hub would get from these outcomes (securityhub.plan), one JSON list: what is
    failed, fixed or exempt; a compliant resource that never failed makes none."""
    from mlwarden import securityhub  # noqa: PLC0415 - only for --asff

    findings = [
        planned.finding
        for outcome in outcomes
        for planned in securityhub.plan(outcome)
        if securityhub.needs_a_finding(planned)
    ]
    path.write_text(json.dumps(findings, indent=2) + "\n", encoding="utf-8")


def found(outcomes: list[Outcome]) -> list[Outcome]:
    """The findings, most severe first (stable within a severity: listing order)."""
    kept = [o for o in outcomes if o.outcome not in NOT_FOUND]
    return sorted(kept, key=lambda o: -rank(o.severity))


def fix_lines(outcome: Outcome) -> list[str]:
    """What a person does about it: the check's next step, the change made or to make, and its undo."""
    lines = []
    if outcome.next_step:
        lines.append(f"To do:     {outcome.next_step}")
    if outcome.outcome is OutcomeKind.WOULD_REMEDIATE and outcome.new_state:
        lines.append(f"Would set: {_state(outcome.new_state)} (--mode enforce sets it)")
    elif outcome.outcome is OutcomeKind.REMEDIATED and outcome.new_state:
        lines.append(f"Set:       {_state(outcome.new_state)}")
    if outcome.undo:
        lines.append(f"Undo:      {outcome.undo}")
    if outcome.exempt_hint and outcome.outcome in (OutcomeKind.WOULD_REMEDIATE, OutcomeKind.FLAGGED):
        lines.append(f"Exempt:    {outcome.exempt_hint}")
    return lines


def _state(state: dict[str, Any]) -> str:
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in state.items())


def report(
    outcomes: list[Outcome],
    summary: Summary,
    *,
    mode: str,
    account: str,
    regions: list[str],
    swept: list[SweptCheck],
) -> str:
    names = ", ".join(check.unit.name for check in swept) or "none"
    lines = [f"mlwarden sweep ({mode}) of account {account} in {', '.join(regions)}: {names}"]
    findings = found(outcomes)
    for severity in reversed(SEVERITY_ORDER):
        group = [o for o in findings if o.severity is severity]
        if not group:
            continue
        lines += ["", f"{severity.value} ({len(group)})"]
        for outcome in group:
            controls = f"  [{', '.join(outcome.controls)}]" if outcome.controls else ""
            lines.append(f"  {outcome.resource or 'unknown resource'}")
            lines.append(f"    {outcome.check}: {outcome.outcome.value}{controls}")
            lines.append(f"    What:      {outcome.reason}")
            if outcome.findings:
                lines.append(f"    Failed:    {', '.join(outcome.findings)}")
            lines += [f"    {line}" for line in fix_lines(outcome)]
    ignored = [o for o in outcomes if o.outcome is OutcomeKind.IGNORED]
    if ignored:
        lines += ["", f"Not evaluated ({len(ignored)})"]
        lines += [f"  {o.resource or 'unknown resource'} ({o.check}): {o.reason}" for o in ignored]
    lines += ["", summary_line(summary, outcomes, sends_alerts=any(c.settings.send_alerts for c in swept))]
    return "\n".join(lines)


def summary_line(summary: Summary, outcomes: list[Outcome], *, sends_alerts: bool) -> str:
    by_severity = ", ".join(
        f"{summary.by_severity[s.value]} {s.value}" for s in reversed(SEVERITY_ORDER) if summary.by_severity[s.value]
    )
    by_kind = ", ".join(f"{count} {kind}" for kind, count in sorted(summary.by_outcome.items()))
    alerts = f"{summary.alerted} alert(s) sent" if sends_alerts else "no alert sent (no ALERT_TOPIC_ARN)"
    return (
        f"{len(found(outcomes))} finding(s) ({by_severity or 'none'}); {summary.evaluated} resource(s) evaluated "
        f"({by_kind or 'none'}) in {summary.seconds:.1f} s; {alerts}"
    )


def sarif(outcomes: list[Outcome]) -> dict[str, Any]:
    """One SARIF 2.1.0 log: one rule per check, one result per finding, located by the resource's ARN."""
    findings = found(outcomes)
    names = sorted({o.check for o in findings})
    rules = [sarif_log.Rule(id=name, description=_check_summary(name), help=_check_help(name)) for name in names]
    results = [
        sarif_log.Result(
            rule_id=o.check,
            severity=o.severity.value,
            message=f"{o.resource or 'unknown resource'}: {o.outcome.value}: {o.reason}",
            locations=[{"logicalLocations": [{"fullyQualifiedName": o.resource or "unknown", "kind": "resource"}]}],
            properties={
                "outcome": o.outcome.value,
                "findings": list(o.findings),
                "controls": list(o.controls),
                "account": o.trigger.account,
                "region": o.trigger.region,
                "alerted": o.alerted,
                **({"next_step": o.next_step} if o.next_step else {}),
                **({"undo": o.undo} if o.undo else {}),
            },
        )
        for o in findings
    ]
    return sarif_log.log("mlwarden sweep", None, rules, results)


def _check_summary(name: str) -> str:
    doc = importlib.import_module(f"mlwarden.checks.{name}").__doc__ or name
    return doc.strip().splitlines()[0]


def _check_help(name: str) -> str:
    return f"`mlwarden sweep --check {name} --mode enforce` fixes what the check can fix; see the result's properties."


def format_stats(counter: clients.RequestCounter, summary: Summary) -> str:
    """Requests per operation, most first, then the total: one `COUNT  service:Operation` per line."""
    rows = sorted(counter.by_operation.items(), key=lambda item: (-item[1], item[0]))
    lines = [f"{count:>8}  {operation}" for operation, count in rows]
    lines.append(f"{counter.total:>8}  requests in total, {summary.evaluated} resource(s), {summary.seconds:.1f} s")
    return "\n".join(lines)
