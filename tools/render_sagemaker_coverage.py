"""Write the SageMaker.1-.25 coverage table into README.md, between its markers, from the rules.

    .venv/bin/python tools/render_sagemaker_coverage.py

tests/unit/test_sagemaker_controls.py fails when README.md is not what this writes.
"""

from __future__ import annotations

from pathlib import Path

from mlwarden.checks.check_sagemaker_encryption import COVERAGE_END, COVERAGE_START, coverage_table

README = Path(__file__).resolve().parents[1] / "README.md"


def rendered(text: str) -> str:
    """The README text with the table between the markers replaced; ValueError when a marker is missing."""
    start = text.index(COVERAGE_START) + len(COVERAGE_START)
    end = text.index(COVERAGE_END)
    return f"{text[:start]}\n{coverage_table()}\n{text[end:]}"


def main() -> None:
    README.write_text(rendered(README.read_text()))


if __name__ == "__main__":
    main()
