"""How `mlwarden replay` reads an event file: every entry an event or a reported `Unusable`, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlwarden_cli.replay import ReplayInputError, Unusable, read_events

EVENT = {"id": "e1", "source": "aws.s3", "detail-type": "AWS API Call via CloudTrail", "detail": {}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (json.dumps(EVENT), [EVENT]),
        (json.dumps([EVENT, 42, None, "x", [EVENT]]), [EVENT, "a number", "null", "a string", "an array"]),
        (json.dumps(EVENT) + "\n\n" + json.dumps(EVENT), [EVENT, EVENT]),
        (json.dumps(EVENT) + "\n{broken\n" + json.dumps(EVENT), [EVENT, "is not JSON", EVENT]),
        ("[" * 100_000 + "]" * 100_000 + "\n" + json.dumps(EVENT), ["nests too deeply", EVENT]),
        ("[" * 100_000 + "]" * 100_000, ["nests too deeply"]),
        ("true", ["a boolean"]),
    ],
    ids=["object", "array", "json-lines", "one-bad-line", "deep-first-line", "only-deep", "scalar"],
)
def test_each_entry_is_an_event_or_says_why_it_is_not(tmp_path: Path, text: str, expected: list[object]) -> None:
    path = tmp_path / "events.json"
    path.write_text(text)

    entries = read_events(path)

    assert len(entries) == len(expected)
    for entry, want in zip(entries, expected, strict=True):
        if isinstance(want, str):
            assert isinstance(entry, Unusable)
            assert want in entry.reason
        else:
            assert entry == want


@pytest.mark.parametrize("text", ["", "\n\n", "{not json\n", "{not json\nnor this\n"])
def test_a_file_with_no_json_at_all_is_unusable_as_a_whole(tmp_path: Path, text: str) -> None:
    path = tmp_path / "events.json"
    path.write_text(text)

    with pytest.raises(ReplayInputError):
        read_events(path)
