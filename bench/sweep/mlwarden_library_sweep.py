"""`mlwarden sweep --mode dry-run --json`, through the library, for a tree where the CLI has no `sweep` yet.

    python mlwarden_library_sweep.py CHECK...

Sweeps the named checks in us-east-1 of the account the standard environment points at, and prints one
outcome per line as the CLI's --json does.
"""

from __future__ import annotations

import json
import sys

import boto3

from mlwarden.settings import load_settings
from mlwarden.sweep import run_sweep


def main(check_names: list[str]) -> int:
    settings = load_settings()
    account = boto3.client("sts").get_caller_identity()["Account"]
    for outcome in run_sweep(check_names, ["us-east-1"], account, settings):
        print(json.dumps(outcome.as_dict(), sort_keys=True, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
