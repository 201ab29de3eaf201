"""Sweep benchmark: ML Warden's dry-run sweep against Prowler, Cloud Custodian and a boto3 floor (issue 13).

    .venv/bin/python -m bench.sweep.run                  # N = 100 and 1,000, every tool, table on stdout
    .venv/bin/python -m bench.sweep.run --n 100 --tool floor --tool mlwarden --json

For each N: one moto server (moto's own, wrapped to count every request by operation), seeded once (see
seed.py); then each tool runs as a child process against it with the same fake credentials and
AWS_ENDPOINT_URL, the request counts reset before each. Time is the child's wall time, start-up included.
Prowler and Cloud Custodian run from their own virtualenvs (`make bench` creates them, pinned); a tool whose
virtualenv is missing is reported as not run. Every tool is read-only here (ML Warden in dry-run mode), so the
order does not change what the next one sees. Figures inform; the exit status is 0 on a MISS, non-zero only
when the benchmark itself breaks (the server, the seeding, or the floor or ML Warden failing).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.sweep.seed import ALERT_TOPIC, KINDS, REGION, GroundTruth, score, seed
from mlwarden_cli.emulator import FAKE_CREDENTIALS, moto_server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV_BIN = Path(sys.executable).parent
PROWLER = ROOT / ".venv-prowler" / "bin" / "prowler"
CUSTODIAN = ROOT / ".venv-custodian" / "bin" / "custodian"
CUSTODIAN_POLICIES = HERE / "custodian.yml"
TOOLS = ("floor", "mlwarden", "custodian", "prowler")
TARGET_RATIO = 1.5

# Prowler's checks that match ML Warden's (ids from prowler/providers/aws/services/*/): bucket and account
# public-access blocks and public buckets, admin policies (Prowler has no check for a service-wide wildcard
# such as s3:*; its privilege-escalation check is the nearest), training-job and notebook encryption and exposure.
PROWLER_CHECKS = (
    "s3_bucket_level_public_access_block",
    "s3_bucket_public_access",
    "s3_bucket_public_list_acl",
    "s3_account_level_public_access_blocks",
    "iam_customer_attached_policy_no_administrative_privileges",
    "iam_customer_unattached_policy_no_administrative_privileges",
    "iam_policy_allows_privilege_escalation",
    "sagemaker_training_jobs_volume_and_output_encryption_enabled",
    "sagemaker_notebook_instance_encryption_enabled",
    "sagemaker_notebook_instance_without_direct_internet_access_configured",
    "sagemaker_notebook_instance_root_access_disabled",
)


@dataclass
class Run:
    """One tool's run: time, requests by operation, and what it reported as bad."""

    tool: str
    seconds: float | None = None
    requests: int | None = None
    by_operation: dict[str, int] = field(default_factory=dict)
    reported: list[str] = field(default_factory=list)
    problem: str | None = None
    version: str | None = None
    samples: list[float] = field(default_factory=list)  # every round's time
    # The tool's own CPU time (user + system, the server's excluded): steadier than wall time under load.
    cpu_seconds: float | None = None

    def as_dict(self, truth: GroundTruth) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "version": self.version,
            "seconds": self.seconds,
            "seconds_by_round": self.samples,
            "cpu_seconds": self.cpu_seconds,
            "requests": self.requests,
            # ML Warden alerts what it finds (one SNS publish per new finding); the other tools only report.
            "requests_without_alerts": None
            if self.requests is None
            else self.requests - self.by_operation.get("sns:Publish", 0),
            "by_operation": dict(sorted(self.by_operation.items(), key=lambda item: -item[1])),
            "score": score(truth, self.reported) if self.problem is None else None,
            "problem": self.problem,
        }


def tool_env(endpoint: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    return {
        **env,
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": REGION,
        "PYTHONWARNINGS": "ignore",
    }


def counts(endpoint: str, action: str = "counts") -> dict[str, Any]:
    method = "POST" if action == "reset" else "GET"
    request = urllib.request.Request(f"{endpoint}/_bench/{action}", method=method)
    with urllib.request.urlopen(request, timeout=30) as response:  # local http
        result: dict[str, Any] = json.load(response)
        return result


_CPU_SECONDS: list[float] = []  # the last child's user + system time


def timed(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[float, str, str, int]:
    """Run a tool; its wall time, stdout, stderr and exit status (its CPU time goes to _CPU_SECONDS)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    _CPU_SECONDS[:] = [after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime]
    return wall, done.stdout, done.stderr, done.returncode


# --- each tool: how to run it, and how to read what it found --------------------------------------------------


def _json_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.strip().startswith("{"):
            yield json.loads(line)


# What the floor reads for each ML Warden check (tag_pii_bucket acts on Macie findings: nothing seeded here).
FLOOR_SCOPE = {"block_public_s3": "s3", "flag_wildcard_iam": "iam", "check_sagemaker_encryption": "sagemaker"}


def swept_checks() -> list[str]:
    """ML Warden's checks that have an inventory in this tree (a `CheckUnit`)."""
    from mlwarden.checks import CHECK_NAMES, load  # noqa: PLC0415 - the bench imports ML Warden only here

    names = []
    for name in CHECK_NAMES:
        try:
            load(name)
        except AttributeError:  # no UNIT yet
            continue
        names.append(name)
    return names


def floor_scopes(checks: list[str]) -> list[str]:
    return sorted({FLOOR_SCOPE[name] for name in checks if name in FLOOR_SCOPE})


def run_floor(endpoint: str, work: Path, timeout: float, scopes: list[str] | None = None) -> Run:
    argv = [sys.executable, str(HERE / "floor.py"), *(scopes or [])]
    seconds, out, err, status = timed(argv, tool_env(endpoint), work, timeout)
    if status != 0:
        raise RuntimeError(f"the floor failed ({status}): {err[-2000:]}")
    name = f"floor ({', '.join(scopes)} only: ML Warden's scope)" if scopes else "floor"
    return Run(name, seconds, reported=[line["resource"] for line in _json_lines(out)])


def mlwarden_argv(endpoint: str) -> tuple[list[str], dict[str, str], str]:
    """`mlwarden sweep` when this tree's CLI has it, else the same sweep through the library.

    The CLI without ALERT_TOPIC_ARN only reports, like the other tools. The library needs a topic (the
    functions' settings): it alerts each finding, and the SNS publishes are counted apart.
    """
    cli = VENV_BIN / "mlwarden"
    probe = subprocess.run([str(cli), "sweep", "--help"], capture_output=True, text=True, check=False)
    checks = swept_checks()
    if probe.returncode == 0:
        argv = [str(cli), "sweep", "--mode", "dry-run", "--json", "--region", REGION]
        return argv, tool_env(endpoint), f"mlwarden sweep (CLI), checks with an inventory: {', '.join(checks)}"
    argv = [sys.executable, str(HERE / "mlwarden_library_sweep.py"), *checks]
    env = {
        **tool_env(endpoint),
        "ALERT_TOPIC_ARN": f"arn:aws:sns:{REGION}:123456789012:{ALERT_TOPIC}",
        "REMEDIATION_MODE": "dry-run",
    }
    return argv, env, f"mlwarden.sweep.run_sweep (library), checks with an inventory: {', '.join(checks)}"


FOUND = {"would-remediate", "remediated", "flagged", "exempt", "failed"}


def run_mlwarden(endpoint: str, work: Path, timeout: float) -> Run:
    argv, env, how = mlwarden_argv(endpoint)
    # From the repository: the CLI finds template.yaml (the functions' environment) from its directory.
    seconds, out, err, status = timed(argv, env, ROOT, timeout)
    if status not in (0, 1):  # 1: something at or above --fail-on was found
        raise RuntimeError(f"ML Warden's sweep failed ({status}): {err[-2000:]}")
    outcomes = list(_json_lines(out))
    run = Run("mlwarden", seconds, version=how)
    run.reported = [o["resource"] for o in outcomes if o.get("outcome") in FOUND and o.get("resource")]
    return run


def run_custodian(endpoint: str, work: Path, timeout: float) -> Run:
    if not CUSTODIAN.exists():
        return Run("custodian", problem=f"{CUSTODIAN} is missing: run `make bench` to create its virtualenv")
    out_dir = work / "custodian"
    argv = [str(CUSTODIAN), "run", "--cache-period", "0", "-r", REGION, "-s", str(out_dir), str(CUSTODIAN_POLICIES)]
    seconds, _, err, status = timed(argv, tool_env(endpoint), work, timeout)
    run = Run("custodian", seconds, version=_version([str(CUSTODIAN), "version"]))
    if status != 0:
        run.problem = f"custodian run exited {status}: {err[-1500:]}"
    for resources in out_dir.glob("*/resources.json"):
        run.reported.extend(_custodian_id(found) for found in json.loads(resources.read_text()))
    return run


def _custodian_id(resource: dict[str, Any]) -> str:
    for key in ("Arn", "TrainingJobArn", "NotebookInstanceArn", "Name", "NotebookInstanceName"):
        if key in resource:
            return str(resource[key])
    return json.dumps(resource)[:80]


def run_prowler(endpoint: str, work: Path, timeout: float) -> Run:
    if not PROWLER.exists():
        return Run("prowler", problem=f"{PROWLER} is missing: run `make bench` to create its virtualenv")
    out_dir = work / "prowler"
    argv = [
        str(PROWLER), "aws", "--checks", *PROWLER_CHECKS, "--region", REGION,
        "--output-formats", "json-ocsf", "--output-directory", str(out_dir), "--output-filename", "sweep",
        "--no-banner", "--status", "FAIL",
    ]  # fmt: skip
    seconds, out, err, status = timed(argv, tool_env(endpoint), work, timeout)
    run = Run("prowler", seconds, version=_version([str(PROWLER), "--version"]))
    # Prowler exits 3 when a check failed, which is what it is asked to find.
    if status not in (0, 3):
        run.problem = f"prowler exited {status}: {(err or out)[-1500:]}"
    for findings in out_dir.glob("*.ocsf.json"):
        for finding in json.loads(findings.read_text() or "[]"):
            if finding.get("status_code") == "FAIL":
                run.reported.extend(str(r.get("uid") or r.get("name")) for r in finding.get("resources", []))
    return run


def _version(argv: list[str]) -> str | None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip().splitlines()[-1] if done.returncode == 0 else None


RUNNERS: dict[str, Callable[[str, Path, float], Run]] = {
    "floor": run_floor,
    "mlwarden": run_mlwarden,
    "custodian": run_custodian,
    "prowler": run_prowler,
}


def bench_one(n: int, tools: list[str], timeout: float, rounds: int) -> dict[str, Any]:
    server = (str(HERE / "counting_moto_server.py"),)
    with moto_server(timeout=60, server=server) as endpoint, tempfile.TemporaryDirectory() as tmp:
        print(f"N={n}: seeding {endpoint}", file=sys.stderr)
        started = time.perf_counter()
        truth = seed(endpoint, n)
        print(f"N={n}: seeded in {time.perf_counter() - started:.1f} s: {truth.as_dict()}", file=sys.stderr)
        scopes = floor_scopes(swept_checks())
        plan: list[tuple[str, Callable[[Path], Run]]] = []
        for tool in tools:
            plan.append((tool, functools.partial(RUNNERS[tool], endpoint, timeout=timeout)))
            if tool == "mlwarden" and "floor" in tools and scopes != sorted(FLOOR_SCOPE.values()):
                # ML Warden does not sweep everything yet: its ratios are to the floor over the same scope.
                plan.append(("floor-scoped", functools.partial(run_floor, endpoint, timeout=timeout, scopes=scopes)))
        # Rounds interleave the tools, so that a busy minute on a shared machine hits them all alike.
        samples: dict[str, list[Run]] = {name: [] for name, _ in plan}
        for round_index in range(rounds):
            for name, run_tool in plan:
                work = Path(tmp) / f"{name}-{round_index}"
                work.mkdir()
                run = _measured(endpoint, run_tool, work)
                print(
                    f"N={n} round {round_index + 1}: {run.tool}: {run.seconds} s, {run.requests} requests",
                    file=sys.stderr,
                )
                samples[name].append(run)
        runs = [_median_run(runs) for runs in samples.values()]
        return {"n": n, "rounds": rounds, "truth": truth.as_dict(), "runs": [run.as_dict(truth) for run in runs]}


def _median_run(runs: list[Run]) -> Run:
    """The run of median time (its own request counts and findings go with it)."""
    timed_runs = sorted((run for run in runs if run.seconds is not None), key=lambda run: run.seconds or 0.0)
    if not timed_runs:
        return runs[0]
    median = timed_runs[len(timed_runs) // 2]
    median.samples = [round(run.seconds or 0.0, 2) for run in runs]
    return median


def _measured(endpoint: str, run_tool: Callable[[Path], Run], work: Path) -> Run:
    counts(endpoint, "reset")
    run = run_tool(work)
    if run.seconds is not None:
        run.cpu_seconds = round(_CPU_SECONDS[0], 2) if _CPU_SECONDS else None
        measured = counts(endpoint)
        run.requests, run.by_operation = measured["total"], measured["by_operation"]
    return run


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| N | tool | time (s) | CPU (s) | API requests | time / floor | requests / floor | bad found / seeded |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        full_floor = next((r for r in result["runs"] if r["tool"] == "floor" and r["seconds"]), None)
        scoped_floor = next((r for r in result["runs"] if r["tool"].startswith("floor (")), None)
        for run in result["runs"]:
            floor = scoped_floor if run["tool"] == "mlwarden" and scoped_floor else full_floor
            if run["seconds"] is None:
                lines.append(f"| {result['n']} | {run['tool']} | - | - | - | - | - | not run: {run['problem']} |")
                continue
            time_ratio = f"{run['seconds'] / floor['seconds']:.2f}" if floor else "-"
            reads = run["requests_without_alerts"]
            request_ratio = f"{reads / floor['requests']:.2f}" if floor and floor["requests"] else "-"
            requests = f"{run['requests']} ({reads} without alerts)" if reads != run["requests"] else reads
            found = run["score"]
            by_kind = (
                ", ".join(f"{kind} {found['found'][kind]}/{result['truth']['bad'][kind]}" for kind in KINDS)
                if found
                else "-"
            )
            total = f"{found['found_total']}/{found['bad_total']} ({by_kind})" if found else "-"
            lines.append(
                f"| {result['n']} | {run['tool']} | {run['seconds']:.1f} | {run['cpu_seconds']} | {requests} | "
                f"{time_ratio} | {request_ratio} | {total} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, action="append", help="resources scale (default: 100 and 1000)")
    parser.add_argument("--tool", action="append", choices=TOOLS, help="tools to run (default: all)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each tool; the median time is kept")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one tool may take")
    parser.add_argument("--json", action="store_true", help="every figure as JSON on stdout")
    args = parser.parse_args(argv)
    tools = args.tool or list(TOOLS)
    os.environ.update(FAKE_CREDENTIALS)  # the seeding's own clients
    results = [bench_one(n, tools, args.timeout, args.rounds) for n in args.n or [100, 1000]]
    report = {"machine": machine(), "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(results))
        print(f"\ntarget: ML Warden within {TARGET_RATIO}x of the floor in time and requests; machine: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
