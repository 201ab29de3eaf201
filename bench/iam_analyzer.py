"""Benchmark of ML Warden's IAM policy analyzer against AWS Config's rules, parliament and cloudsplaining.

    .venv/bin/python bench/iam_analyzer.py            # readable report
    .venv/bin/python bench/iam_analyzer.py --json     # the figures as JSON

Corpus: every AWS-managed policy moto ships (moto.iam.aws_managed_policies) plus bench/corpus/
iam_policies.jsonl.gz (AWS-managed policies from iam-dataset, parliament's own unit-test policies,
Cloud Custodian's recorded policies; see bench/corpus/NOTICE.md). Needs the `bench` extra
(`make bench` installs it). Informs, never gates: the exit status is 0 on a MISS.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import parliament
from cloudsplaining.scan.policy_document import PolicyDocument
from moto.iam.aws_managed_policies import aws_managed_policies_data

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "bench" / "corpus" / "iam_policies.jsonl.gz"
sys.path.insert(0, str(ROOT / "layers" / "core"))

from mlwarden.outcomes import Severity  # noqa: E402
from mlwarden.rules import escalation  # noqa: E402
from mlwarden.rules.policy_analysis import Analysis, Rule, analyze, is_any_resource, rank  # noqa: E402

ESCALATION_RULES = {Rule.FULL_ADMIN, Rule.PRIVILEGE_ESCALATION, Rule.PARTIAL_ESCALATION}
FLAG_AT = Severity.MEDIUM  # what flag_wildcard_iam alerts on (iam.FLAG_AT)
SPEED_TARGET = 100  # times faster than parliament


@dataclass
class Document:
    id: str
    set: str
    policy: dict[str, Any]
    labels: dict[str, Any] | None = None  # the corpus's labels (bench/corpus/NOTICE.md); None for moto's copies
    ours: Analysis | None = None
    facts: dict[str, bool] = field(default_factory=dict)


def load_corpus() -> list[Document]:
    documents = [
        Document(f"moto/{name}", "moto_aws_managed", data["Document"])
        for name, data in sorted(json.loads(aws_managed_policies_data).items())
        if isinstance(data.get("Document"), dict)
    ]
    with gzip.open(CORPUS, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if isinstance(row.get("document"), dict):
                documents.append(Document(row["id"], row["set"], row["document"], row.get("labels")))
    return documents


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _allow_statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in _list(policy.get("Statement", [])) if isinstance(s, dict) and s.get("Effect") == "Allow"]


def config_admin_access(policy: dict[str, Any]) -> bool:
    """iam-policy-no-statements-with-admin-access as documented: an Allow of Action "*" on Resource "*"."""
    return any("*" in _list(s.get("Action")) and "*" in _list(s.get("Resource")) for s in _allow_statements(policy))


def config_full_access(policy: dict[str, Any]) -> bool:
    """iam-policy-no-statements-with-full-access as documented: an Allow of a `service:*` action."""
    return any(
        isinstance(a, str) and a.endswith(":*") and a != "*:*"
        for s in _allow_statements(policy)
        for a in _list(s.get("Action"))
    )


def ours_facts(analysis: Analysis) -> dict[str, bool]:
    findings = [f for f in analysis.findings if f.rule is not Rule.UNKNOWN_ACTION]
    return {
        "admin": any(f.rule is Rule.FULL_ADMIN and "NotAction" not in " ".join(f.actions) for f in findings),
        "service_wildcard": any(
            f.rule is Rule.SERVICE_WILDCARD and any(a.endswith(":*") for a in f.actions) for f in findings
        ),
        "resource_star": any(any(is_any_resource(r) for r in f.resources) for f in findings),
        # A service wildcard counts when it reaches escalation actions (iam:*, glue:*, ...), as for the linters.
        "escalation": any(f.rule in ESCALATION_RULES and rank(f.severity) >= rank(FLAG_AT) for f in findings),
        "flagged": any(f.severity.value in ("CRITICAL", "HIGH", "MEDIUM") for f in findings),
    }


def parliament_facts(policy: dict[str, Any]) -> dict[str, bool] | None:
    """None when parliament raises (it does on condition types newer than its database)."""
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            found = parliament.analyze_policy_string(json.dumps(policy), include_community_auditors=True)
    except Exception:
        return None
    codes = {finding.issue for finding in found.findings}
    return {
        "resource_star": bool(codes & {"RESOURCE_STAR", "RESOURCE_EFFECTIVELY_STAR"}),
        "escalation": "PRIVILEGE_ESCALATION" in codes,
    }


def cloudsplaining_facts(policy: dict[str, Any]) -> dict[str, bool] | None:
    try:
        document = PolicyDocument(policy)
    except Exception:
        return None
    return {
        "escalation": bool(document.allows_privilege_escalation),
        "exposure": bool(document.permissions_management_without_constraints),
    }


def escalation_label(labels: dict[str, Any]) -> bool:
    """An escalation path by the corpus's labels: a combination cloudsplaining finds (its privilege-escalation
    list is Rhino Security Labs' combinations), parliament's PRIVILEGE_ESCALATION, or admin access."""
    cloudsplaining = labels.get("cloudsplaining_0_9_1_resource_star_only") or {}
    return (
        bool(cloudsplaining.get("privilege_escalation"))
        or "PRIVILEGE_ESCALATION" in (labels.get("parliament_1_6_4") or [])
        or bool(labels.get("config_admin_access"))
    )


def must_pass(labels: dict[str, Any]) -> bool:
    """Nobody flags it: not the combined label, not an escalation label, not iam-dataset's privesc flag."""
    return (
        labels.get("suggested_should_flag") is False
        and not escalation_label(labels)
        and not (labels.get("iam_dataset_flags") or {}).get("privesc")
    )


def labelled(documents: list[Document]) -> dict[str, Any]:
    """Recall of escalation paths, precision of our escalation findings, false alarms on must-pass policies."""
    caught = missed = ours_only = 0
    iam_dataset = Agreement()
    passing = alarms = 0
    classes: dict[str, str] = {}
    counts: Counter[str] = Counter()
    examples_missed: list[str] = []
    for document in documents:
        if document.labels is None or document.ours is None:
            continue
        facts = ours_facts(document.ours)
        if escalation_label(document.labels):
            caught += facts["escalation"]
            missed += not facts["escalation"]
            if not facts["escalation"]:
                examples_missed.append(document.id)
        elif facts["escalation"]:
            ours_only += 1
        iam_dataset.add(
            document.id, facts["escalation"], bool((document.labels.get("iam_dataset_flags") or {}).get("privesc"))
        )
        if must_pass(document.labels):
            passing += 1
            flagged = document.ours.at_least(FLAG_AT)
            alarms += bool(flagged)
            for finding in flagged:
                name = f"{finding.rule.value}: {finding.paths[0]}" if finding.paths else finding.rule.value
                counts[name] += 1
                classes.setdefault(name, document.id)
    return {
        "escalation_labelled": caught + missed,
        "recall": round(caught / (caught + missed), 4) if caught + missed else 1.0,
        "precision": round(caught / (caught + ours_only), 4) if caught + ours_only else 1.0,
        "ours_only": ours_only,
        "examples_missed": examples_missed[:8],
        "iam_dataset_privesc": iam_dataset.as_dict(),
        "must_pass": passing,
        "false_alarms": alarms,
        "false_alarm_rate": round(alarms / passing, 4) if passing else 0.0,
        "false_alarm_classes": [
            {"class": name, "findings": count, "example": classes[name]} for name, count in counts.most_common()
        ],
    }


def timed(function: Callable[[dict[str, Any]], Any], documents: list[Document]) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    results = [function(d.policy) for d in documents]
    return time.perf_counter() - started, results


@dataclass
class Agreement:
    both: int = 0
    only_ours: int = 0
    only_theirs: int = 0
    examples_only_ours: list[str] = field(default_factory=list)
    examples_only_theirs: list[str] = field(default_factory=list)

    def add(self, document_id: str, ours: bool, theirs: bool) -> None:
        if ours and theirs:
            self.both += 1
        elif ours:
            self.only_ours += 1
            self.examples_only_ours.append(document_id)
        elif theirs:
            self.only_theirs += 1
            self.examples_only_theirs.append(document_id)

    @property
    def precision(self) -> float:
        return self.both / (self.both + self.only_ours) if self.both + self.only_ours else 1.0

    @property
    def recall(self) -> float:
        return self.both / (self.both + self.only_theirs) if self.both + self.only_theirs else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "both": self.both,
            "only_ours": self.only_ours,
            "only_theirs": self.only_theirs,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "examples_only_ours": self.examples_only_ours[:8],
            "examples_only_theirs": self.examples_only_theirs[:8],
        }


def catalogue_cold_load_ms(rounds: int = 7) -> float:
    """Median time, in a fresh interpreter, for the first lookup (reads and parses the catalogue file)."""
    code = (
        f"import sys,time; sys.path.insert(0, {str(ROOT / 'layers' / 'core')!r}); "
        "from mlwarden import action_catalogue; t=time.perf_counter(); "
        "action_catalogue.lookup('s3:GetObject'); action_catalogue.expand('iam:Put*'); "
        "print((time.perf_counter()-t)*1000)"
    )
    samples = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(rounds)]
    return statistics.median(samples)


COMPARISONS = (
    # name, our fact, their source, their fact
    ("parliament RESOURCE_STAR", "resource_star", "parliament", "resource_star"),
    ("parliament PRIVILEGE_ESCALATION", "escalation", "parliament", "escalation"),
    ("cloudsplaining privilege escalation", "escalation", "cloudsplaining", "escalation"),
    ("cloudsplaining resource exposure", "resource_star", "cloudsplaining", "exposure"),
    ("cloudsplaining resource exposure, our flag (>= MEDIUM)", "flagged", "cloudsplaining", "exposure"),
)


def run(rounds: int, every: int = 1) -> dict[str, Any]:
    documents = load_corpus()[::every]
    print(f"corpus: {len(documents)} documents {dict(Counter(d.set for d in documents))}", file=sys.stderr)
    cold_ms = catalogue_cold_load_ms()
    analyze(documents[0].policy)  # warm the catalogue: the comparison is per document, not per cold start
    our_times = []
    for _ in range(rounds):
        elapsed, analyses = timed(analyze, documents)
        our_times.append(elapsed)
    for document, analysis in zip(documents, analyses, strict=True):
        document.ours = analysis
    print("parliament ...", file=sys.stderr)
    parliament_time, parliament_results = timed(parliament_facts, documents)
    print("cloudsplaining ...", file=sys.stderr)
    cloudsplaining_time, cloudsplaining_results = timed(cloudsplaining_facts, documents)
    theirs = {"parliament": parliament_results, "cloudsplaining": cloudsplaining_results}

    config = {"admin access": Agreement(), "full access (service:*)": Agreement()}
    comparisons = {name: Agreement() for name, *_ in COMPARISONS}
    for index, document in enumerate(documents):
        assert document.ours is not None
        ours = ours_facts(document.ours)
        config["admin access"].add(document.id, ours["admin"], config_admin_access(document.policy))
        config["full access (service:*)"].add(
            document.id, ours["service_wildcard"], config_full_access(document.policy)
        )
        for name, our_fact, source, their_fact in COMPARISONS:
            result = theirs[source][index]
            if result is not None:  # documents the tool could not read are left out of its comparison
                comparisons[name].add(document.id, ours[our_fact], result[their_fact])
    our_time = statistics.median(our_times)
    return {
        "documents": len(documents),
        "sets": dict(Counter(d.set for d in documents)),
        "versions": {name: metadata.version(name) for name in ("parliament", "cloudsplaining", "moto")},
        "config_rules": {name: a.as_dict() for name, a in config.items()},
        "comparisons": {name: a.as_dict() for name, a in comparisons.items()},
        "seconds": {
            "ours_median": round(our_time, 4),
            "parliament": round(parliament_time, 3),
            "cloudsplaining": round(cloudsplaining_time, 3),
        },
        "tool_errors": {source: sum(r is None for r in results) for source, results in theirs.items()},
        "speedup_vs_parliament": round(parliament_time / our_time, 1),
        "speedup_vs_cloudsplaining": round(cloudsplaining_time / our_time, 1),
        "catalogue_cold_load_ms": round(cold_ms, 2),
        "escalation_paths_known": len(escalation.catalogue().paths),
        "escalation_paths_source": escalation.catalogue().source,
        "labelled": labelled(documents),
    }


def report(figures: dict[str, Any]) -> str:
    lines = [
        f"IAM analyzer benchmark: {figures['documents']} policy documents {figures['sets']}",
        f"tools: {figures['versions']}; documents a tool raised on (left out of its rows): {figures['tool_errors']}",
        "",
        f"{'agreement':58} {'both':>5} {'ours':>5} {'theirs':>6} {'prec':>6} {'recall':>6}",
    ]
    for title, group in (("Config", figures["config_rules"]), ("", figures["comparisons"])):
        for name, a in group.items():
            label = f"{title} {name}".strip()
            lines.append(
                f"{label:58} {a['both']:5} {a['only_ours']:5} {a['only_theirs']:6} "
                f"{a['precision']:6.3f} {a['recall']:6.3f}"
            )
    recall_ok = all(a["recall"] == 1.0 for a in figures["config_rules"].values())
    seconds = figures["seconds"]
    lines += [
        "",
        f"Config-rule recall 100%: {'PASS' if recall_ok else 'MISS'}",
        f"time for the corpus: ours {seconds['ours_median'] * 1000:.0f} ms (median), parliament "
        f"{seconds['parliament']:.1f} s, cloudsplaining {seconds['cloudsplaining']:.1f} s",
        f"speed-up vs parliament: {figures['speedup_vs_parliament']}x (target >= {SPEED_TARGET}x: "
        f"{'PASS' if figures['speedup_vs_parliament'] >= SPEED_TARGET else 'MISS'}); vs cloudsplaining "
        f"{figures['speedup_vs_cloudsplaining']}x",
        f"catalogue cold load: {figures['catalogue_cold_load_ms']} ms (target < 20 ms: "
        f"{'PASS' if figures['catalogue_cold_load_ms'] < 20 else 'MISS'})",
    ]
    return "\n".join(lines + labelled_report(figures))


def labelled_report(figures: dict[str, Any]) -> list[str]:
    found = figures["labelled"]
    iam_dataset = found["iam_dataset_privesc"]
    lines = [
        "",
        f"escalation paths known: {figures['escalation_paths_known']} ({figures['escalation_paths_source']})",
        f"escalation paths (labelled, {found['escalation_labelled']} documents): recall {found['recall']:.3f} "
        f"(target >= 0.95: {'PASS' if found['recall'] >= 0.95 else 'MISS'}), precision {found['precision']:.3f} "
        f"({found['ours_only']} flagged as escalation without the label)",
        f"  vs iam-dataset's broader privesc flag: recall {iam_dataset['recall']:.3f}, "
        f"precision {iam_dataset['precision']:.3f}",
        f"must-pass policies: {found['must_pass']}, false alarms (a finding at {FLAG_AT.value} or above) "
        f"{found['false_alarms']} = {found['false_alarm_rate']:.1%} (target <= 10%: "
        f"{'PASS' if found['false_alarm_rate'] <= 0.10 else 'MISS'})",
        "false-alarm classes left (findings, one example):",
    ]
    lines += [f"  {c['class']:52} {c['findings']:4}  {c['example']}" for c in found["false_alarm_classes"]]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of our analyzer (median)")
    parser.add_argument("--every", type=int, default=1, help="use every Nth document (quicker, less exact)")
    args = parser.parse_args()
    figures = run(args.rounds, args.every)
    print(json.dumps(figures, indent=2) if args.json else report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
