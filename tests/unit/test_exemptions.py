"""Exemption by tag: open-ended, until a date, or not at all; anything unreadable fails closed."""

from __future__ import annotations

import datetime as dt

import pytest

from mlwarden.exemptions import NOT_EXEMPT, exemption_from_tags

KEY = "mlwarden:exempt"
TODAY = dt.date(2026, 6, 15)


def test_no_tag_is_not_exempt() -> None:
    assert exemption_from_tags({"team": "ml"}, KEY, TODAY) == NOT_EXEMPT


def test_no_tags_at_all_is_not_exempt() -> None:
    assert exemption_from_tags({}, KEY, TODAY).active is False


def test_unreadable_tags_fail_closed() -> None:
    exemption = exemption_from_tags(None, KEY, TODAY)

    assert exemption.active is False
    assert "fail closed" in exemption.reason


@pytest.mark.parametrize("value", ["true", "TRUE", "yes", "approved by SEC-1234", "  true  "])
def test_true_or_any_note_is_an_open_ended_exemption(value: str) -> None:
    exemption = exemption_from_tags({KEY: value}, KEY, TODAY)

    assert exemption.active is True
    assert exemption.expires is None
    assert exemption.reason == f"tagged {KEY}, no expiry"


@pytest.mark.parametrize("value", ["false", "False", "no", "0", "off", "none", "", "   "])
def test_negative_values_do_not_exempt(value: str) -> None:
    exemption = exemption_from_tags({KEY: value}, KEY, TODAY)

    assert exemption.active is False
    assert exemption.reason.startswith(f"tag {KEY} is set to")


@pytest.mark.parametrize(
    ("value", "active"),
    [
        pytest.param("2099-01-01", True, id="future"),
        pytest.param("2026-06-16", True, id="tomorrow"),
        pytest.param("2026-06-15", True, id="today-still-counts"),
        pytest.param("2026-06-14", False, id="yesterday"),
        pytest.param("2020-01-01", False, id="past"),
        pytest.param("until 2099-01-01 (SEC-1234)", True, id="date-inside-a-note"),
    ],
)
def test_dated_exemption_counts_until_its_day(value: str, active: bool) -> None:
    exemption = exemption_from_tags({KEY: value}, KEY, TODAY)

    assert exemption.active is active
    assert exemption.expires is not None


def test_expired_exemption_says_when_it_expired() -> None:
    exemption = exemption_from_tags({KEY: "2020-01-01"}, KEY, TODAY)

    assert exemption.reason == f"exemption tag {KEY} expired on 2020-01-01"
    assert exemption.expires == dt.date(2020, 1, 1)


@pytest.mark.parametrize("value", ["2027-13-45", "2027-02-30", "0000-01-01"])
def test_impossible_date_fails_closed(value: str) -> None:
    exemption = exemption_from_tags({KEY: value}, KEY, TODAY)

    assert exemption.active is False
    assert "invalid expiry date" in exemption.reason
    assert "fail closed" in exemption.reason


def test_without_today_the_current_utc_date_is_used() -> None:
    assert exemption_from_tags({KEY: "2000-01-01"}, KEY).active is False
    assert exemption_from_tags({KEY: "9999-12-31"}, KEY).active is True


def test_only_the_configured_key_counts() -> None:
    assert exemption_from_tags({"mlwarden:exempt": "true"}, "security/exempt", TODAY).active is False


@pytest.mark.parametrize("value", ["2020-1-1", "2020/01/01", "01-01-2020", "20200101"])
def test_expired_date_in_another_format_does_not_exempt(value: str) -> None:
    assert exemption_from_tags({KEY: value}, KEY, TODAY).active is False
