"""A sender's configuration from its environment, and what it says is missing."""

from __future__ import annotations

import pytest

from noti.sender.config import SenderConfig


def test_the_bundle_id_is_read_from_its_name_and_for_one_release_from_the_old_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTI_APNS_TOPIC", "com.example.old")
    assert SenderConfig().apns_bundle_id == "com.example.old"
    monkeypatch.setenv("NOTI_APNS_BUNDLE_ID", "com.example.new")
    assert SenderConfig().apns_bundle_id == "com.example.new"  # the new name wins over the old


def test_problems_name_every_missing_or_contradictory_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTI_APNS_TOPIC", "NOTI_APNS_BUNDLE_ID", "NOTI_APNS_TEAM_ID", "NOTI_APNS_KEY_ID",
                 "NOTI_APNS_KEY_FILE", "NOTI_APNS_CERT_FILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    problems = SenderConfig(apns_environment="staging").problems()
    assert "NOTI_APNS_BUNDLE_ID (the app's bundle id) is not set" in problems
    assert "NOTI_APNS_ENVIRONMENT must be sandbox or production" in problems
    assert sum("token auth needs team id, key id and key file" in p for p in problems) == 3
    complete = SenderConfig(apns_bundle_id="com.x", apns_team_id="T", apns_key_id="K", apns_key_file="/k.p8")
    assert complete.problems() == []
    by_certificate = SenderConfig(apns_bundle_id="com.x", apns_cert_file="/c.p12")
    assert by_certificate.problems() == []
    assert (
        "NOTI_CREDENTIAL: a credential is namespace/name, such as noti/dev" in SenderConfig(credential="dev").problems()
    )
