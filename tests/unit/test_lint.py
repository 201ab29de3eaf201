"""`mlwarden lint [--json | --sarif] [--fail-on SEVERITY] PATH...`: the contract of issue 12, exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mlwarden_cli.lint import Resolver
from mlwarden_cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SARIF_SCHEMA = json.loads((ROOT / "tests" / "fixtures" / "sarif" / "sarif-schema-2.1.0.json").read_text("utf-8"))
ADMIN = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
TRAIN_AS_ANY_ROLE = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "Pass", "Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"},
        {"Sid": "Train", "Effect": "Allow", "Action": "sagemaker:CreateTrainingJob", "Resource": "*"},
    ],
}
PASS_ONE_ROLE = {
    "Version": "2012-10-17",
    "Statement": {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::123456789012:role/train"},
}
TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  TrainerRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement:
          - Effect: Allow
            Principal: {Service: sagemaker.amazonaws.com}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: train
          PolicyDocument:
            Statement:
              - Sid: PassAnyRoleOfTheAccount
                Effect: Allow
                Action: iam:PassRole
                Resource: !Sub arn:${AWS::Partition}:iam::${AWS::AccountId}:role/*
              - Sid: Train
                Effect: Allow
                Action: sagemaker:CreateTrainingJob
                Resource: !Sub arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:training-job/*
  Scorer:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      Policies:
        - Statement:
            - Effect: Allow
              Action: s3:GetObject
              Resource: !Sub "${Bucket.Arn}/*"
  Bucket:
    Type: AWS::S3::Bucket
"""


def lint(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    status = main(["lint", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    """A directory of policy files: one CRITICAL, one HIGH (a completed path), one clean, one unrelated."""
    (tmp_path / "admin.json").write_text(json.dumps(ADMIN), encoding="utf-8")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "train.json").write_text(json.dumps(TRAIN_AS_ANY_ROLE, indent=2), encoding="utf-8")
    (tmp_path / "scoped.json").write_text(json.dumps(PASS_ONE_ROLE), encoding="utf-8")
    (tmp_path / "package.json").write_text('{"name": "not a policy"}', encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not read: no policy suffix", encoding="utf-8")
    return tmp_path


def test_the_project_template_passes_at_the_default_and_at_medium(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = lint(capsys, ROOT / "template.yaml")
    assert status == 0
    assert "LOW resource-star" in out  # LOW findings are shown, but do not fail

    status, _, _ = lint(capsys, "--fail-on", "MEDIUM", ROOT / "template.yaml")
    assert status == 0


def test_a_directory_of_policy_files_fails_at_high_with_json_lines(
    capsys: pytest.CaptureFixture[str], policies: Path
) -> None:
    status, out, err = lint(capsys, "--json", policies)

    assert status == 1
    findings = [json.loads(line) for line in out.splitlines()]
    assert all({"path", "severity", "rule", "message"} <= set(f) for f in findings)
    assert {f["severity"] for f in findings} <= {"CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL"}
    by_rule = {(Path(f["path"]).name, f["rule"], f["severity"]) for f in findings}
    assert ("admin.json", "full-admin", "CRITICAL") in by_rule
    assert ("train.json", "privilege-escalation", "HIGH") in by_rule
    assert not [f for f in findings if Path(f["path"]).name in ("scoped.json", "package.json")]
    (path,) = [f for f in findings if f["rule"] == "privilege-escalation"]
    assert path["message"] == (
        "iam:PassRole on all roles + sagemaker:CreateTrainingJob: run code as any role that trusts SageMaker"
    )
    assert (path["statement"], path["sid"], path["line"]) == (0, "Pass", 4)  # statement location
    assert err == ""


@pytest.mark.parametrize(
    ("fail_on", "status"), [("CRITICAL", 1), ("critical", 1), ("HIGH", 1), ("MEDIUM", 1), ("LOW", 1)]
)
def test_fail_on_with_a_critical_finding(
    capsys: pytest.CaptureFixture[str], policies: Path, fail_on: str, status: int
) -> None:
    assert lint(capsys, "--fail-on", fail_on, policies / "admin.json")[0] == status


@pytest.mark.parametrize(("fail_on", "status"), [("CRITICAL", 0), ("HIGH", 1), ("LOW", 1)])
def test_fail_on_with_a_high_finding(
    capsys: pytest.CaptureFixture[str], policies: Path, fail_on: str, status: int
) -> None:
    assert lint(capsys, "--fail-on", fail_on, policies / "nested" / "train.json")[0] == status


def test_a_clean_policy_exits_0(capsys: pytest.CaptureFixture[str], policies: Path) -> None:
    assert lint(capsys, "--fail-on", "LOW", policies / "scoped.json") == (0, "", "")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.json", "{not json: [}"),
        ("broken.yaml", "a: [unclosed\n  - : :"),
        ("README.md", "# just prose, parsed as a YAML string"),
        ("package.json", '{"name": "valid JSON, but no policy and no template"}'),
        ("binary.json", b"\xff\xfe\x00not text"),
    ],
)
def test_unusable_files_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, content: Any) -> None:
    file = tmp_path / name
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        file.write_text(content, encoding="utf-8")

    status, out, err = lint(capsys, file)

    assert status == 2
    assert out == ""
    assert name in err


def test_a_path_that_does_not_exist_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = lint(capsys, tmp_path / "missing.json")

    assert status == 2
    assert "no such file" in err


def test_no_path_and_two_formats_are_usage_errors(capsys: pytest.CaptureFixture[str], policies: Path) -> None:
    for argv in (["lint"], ["lint", "--json", "--sarif", str(policies)], ["lint", "--fail-on", "INFO", str(policies)]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    capsys.readouterr()


def test_a_yaml_template_with_intrinsic_functions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(TEMPLATE, encoding="utf-8")

    status, out, _ = lint(capsys, "--json", template)

    assert status == 1
    findings = [json.loads(line) for line in out.splitlines()]
    (path,) = [f for f in findings if f["rule"] == "privilege-escalation"]
    assert path["policy"] == "TrainerRole/train"
    assert path["line"] == 16  # the PassAnyRoleOfTheAccount statement: every role of the account is `*`
    assert "iam:PassRole on all roles + sagemaker:CreateTrainingJob" in path["message"]
    assert [f for f in findings if f["policy"].startswith("Scorer")] == []


def test_a_json_template(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    template = {
        "Resources": {
            "Admin": {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {"PolicyDocument": ADMIN},
            }
        }
    }
    (tmp_path / "stack.json").write_text(json.dumps(template, indent=1), encoding="utf-8")

    status, out, _ = lint(capsys, tmp_path / "stack.json")

    assert status == 1
    assert "CRITICAL full-admin [Admin/PolicyDocument, statement 0]" in out


def test_statement_level_if_lints_both_branches() -> None:
    resolver = Resolver({"Conditions": {"On": {}}})
    document = {
        "Statement": [
            {
                "Fn::If": [
                    "On",
                    {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"},
                    {"Ref": "AWS::NoValue"},
                ]
            },
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::b/*"}},
        ]
    }

    statements, origins = resolver.statements(document)

    assert statements == [
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"},
    ]
    assert origins == [0, 1]


def test_sarif_is_a_valid_sarif_2_1_0_log(capsys: pytest.CaptureFixture[str], policies: Path) -> None:
    status, out, _ = lint(capsys, "--sarif", policies, ROOT / "template.yaml")

    assert status == 1
    log = json.loads(out)
    jsonschema.validate(log, SARIF_SCHEMA)
    (run,) = log["runs"]
    rules = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    results = run["results"]
    assert {"full-admin", "privilege-escalation"} <= set(rules)
    assert all(rules[r["ruleIndex"]] == r["ruleId"] for r in results)
    escalation = next(r for r in results if r["ruleId"] == "privilege-escalation")
    assert escalation["level"] == "error"
    location = escalation["locations"][0]
    assert location["physicalLocation"]["artifactLocation"]["uri"].endswith("nested/train.json")
    assert location["physicalLocation"]["region"]["startLine"] == 4
    template_results = [r for r in results if "template.yaml" in json.dumps(r["locations"])]
    assert template_results
    assert all(r["level"] == "note" for r in template_results)  # the project's own policies: LOW at most


def test_sarif_with_no_finding_is_valid_too(capsys: pytest.CaptureFixture[str], policies: Path) -> None:
    status, out, _ = lint(capsys, "--sarif", policies / "scoped.json")

    assert status == 0
    log = json.loads(out)
    jsonschema.validate(log, SARIF_SCHEMA)
    assert log["runs"][0]["results"] == []


def test_the_default_key_policy_statement_is_left_to_iam(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html: the account root may do
    # kms:* on the key, so IAM policies decide; granting kms:* to any other principal is a finding.
    root = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    statements = [
        {"Sid": "EnableIamPolicies", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*"},
        {
            "Sid": "Team",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:role/team"},
            "Action": "kms:*",
            "Resource": "*",
        },
    ]
    template = {"Resources": {"Key": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": {"Statement": statements}}}}}
    (tmp_path / "key.json").write_text(json.dumps(template), encoding="utf-8")

    status, out, _ = lint(capsys, "--json", tmp_path / "key.json")

    findings = [json.loads(line) for line in out.splitlines()]
    assert status == 1
    assert {(f["sid"], f["rule"], f["severity"]) for f in findings} == {("Team", "service-wildcard", "HIGH")}
