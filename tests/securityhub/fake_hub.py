"""A Security Hub that keeps AWS's documented finding rules, for the lifecycle tests (moto implements
BatchImportFindings without them, and no BatchUpdateFindings).

- BatchImportFindings creates a finding, or updates one it created; after creation it does not change
  Workflow or Note: https://docs.aws.amazon.com/securityhub/latest/userguide/finding-update-batchimportfindings.html
- Security Hub resets Workflow RESOLVED or NOTIFIED to NEW when Compliance goes from PASSED to FAILED, or
  RecordState from ARCHIVED to ACTIVE: https://docs.aws.amazon.com/securityhub/1.0/APIReference/API_Workflow.html
- BatchUpdateFindings sets Workflow and Note (Text and UpdatedBy) on up to 100 existing findings:
  https://docs.aws.amazon.com/securityhub/latest/userguide/finding-update-batchupdatefindings.html
- GetFindings filters on Id with up to 20 values (EQUALS).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import botocore.session
from botocore.validate import ParamValidator

_MODEL = botocore.session.get_session().get_service_model("securityhub")
_CUSTOMER_FIELDS = ("Workflow", "Note", "UserDefinedFields", "VerificationState")


def validate(operation: str, params: dict[str, Any]) -> None:
    """Raise when params are not what the API accepts (botocore's own model of Security Hub)."""
    report = ParamValidator().validate(params, _MODEL.operation_model(operation).input_shape)
    if report.has_errors():
        raise AssertionError(report.generate_report())


class FakeSecurityHub:
    def __init__(self) -> None:
        self.findings: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, int]] = []
        self.refuse: set[str] = set()

    # the client calls securityhub.py makes

    def batch_import_findings(self, Findings: list[dict[str, Any]]) -> dict[str, Any]:
        validate("BatchImportFindings", {"Findings": Findings})
        assert len(Findings) <= 100
        self.calls.append(("BatchImportFindings", len(Findings)))
        failed = []
        for finding in Findings:
            if finding["Id"] in self.refuse:
                failed.append({"Id": finding["Id"], "ErrorCode": "InvalidInput", "ErrorMessage": "refused"})
                continue
            old = self.findings.get(finding["Id"])
            new = copy.deepcopy(finding)
            if old is not None:
                for name in _CUSTOMER_FIELDS:
                    new.pop(name, None)
                    if name in old:
                        new[name] = old[name]
                was_passed = old["Compliance"]["Status"] == "PASSED"
                was_archived = old.get("RecordState") == "ARCHIVED"
                reopened = (was_passed and new["Compliance"]["Status"] != "PASSED") or (
                    was_archived and new.get("RecordState") == "ACTIVE"
                )
                if reopened and new.get("Workflow", {}).get("Status") in ("RESOLVED", "NOTIFIED"):
                    new["Workflow"] = {"Status": "NEW"}
            new.setdefault("Workflow", {"Status": "NEW"})
            self.findings[finding["Id"]] = new
        return {"FailedCount": len(failed), "SuccessCount": len(Findings) - len(failed), "FailedFindings": failed}

    def batch_update_findings(self, **params: Any) -> dict[str, Any]:
        validate("BatchUpdateFindings", params)
        assert len(params["FindingIdentifiers"]) <= 100
        self.calls.append(("BatchUpdateFindings", len(params["FindingIdentifiers"])))
        unprocessed = []
        for identifier in params["FindingIdentifiers"]:
            finding = self.findings.get(identifier["Id"])
            if finding is None:
                unprocessed.append({"FindingIdentifier": identifier, "ErrorCode": "FindingNotFound"})
                continue
            if "Workflow" in params:
                finding["Workflow"] = dict(params["Workflow"])
            if "Note" in params:
                finding["Note"] = dict(params["Note"])
        return {"ProcessedFindings": [], "UnprocessedFindings": unprocessed}

    def get_paginator(self, operation: str) -> Any:
        assert operation == "get_findings"
        hub = self

        class Paginator:
            def paginate(self, Filters: dict[str, Any]) -> Iterator[dict[str, Any]]:
                validate("GetFindings", {"Filters": Filters})
                ids = [item["Value"] for item in Filters["Id"]]
                assert len(ids) <= 20
                hub.calls.append(("GetFindings", len(ids)))
                yield {"Findings": [copy.deepcopy(hub.findings[i]) for i in ids if i in hub.findings]}

        return Paginator()

    # what a person does in the console

    def person_sets(self, finding_id: str, status: str, who: str = "alice") -> None:
        self.findings[finding_id]["Workflow"] = {"Status": status}
        self.findings[finding_id]["Note"] = {"Text": "reviewed", "UpdatedBy": who}

    def only(self) -> dict[str, Any]:
        assert len(self.findings) == 1, list(self.findings)
        return next(iter(self.findings.values()))
