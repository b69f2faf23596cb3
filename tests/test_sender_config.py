"""A sender's configuration from its environment, and what it says is missing."""

from __future__ import annotations

import pytest

from noti.settings import Settings


def test_the_bundle_id_is_read_from_its_name_and_for_one_release_from_the_old_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTI_APNS_TOPIC", "com.example.old")
    assert Settings().sender.apns_bundle_id == "com.example.old"
    monkeypatch.setenv("NOTI_APNS_BUNDLE_ID", "com.example.new")
    assert Settings().sender.apns_bundle_id == "com.example.new"  # the new name wins over the old


def test_problems_name_every_missing_or_contradictory_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTI_APNS_TOPIC", "NOTI_APNS_BUNDLE_ID", "NOTI_APNS_TEAM_ID", "NOTI_APNS_KEY_ID",
                 "NOTI_APNS_KEY_FILE", "NOTI_APNS_CERT_FILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    problems = Settings.defaults(apns_environment="staging").sender.problems()
    assert "NOTI_APNS_BUNDLE_ID (the app's bundle id) is not set" in problems
    assert "NOTI_APNS_ENVIRONMENT must be sandbox or production" in problems
    assert sum("token auth needs team id, key id and key file" in p for p in problems) == 3
    complete = Settings.defaults(
        apns_bundle_id="com.x", apns_team_id="T", apns_key_id="K", apns_key_file="/k.p8"
    ).sender
    assert complete.problems() == []
    by_certificate = Settings.defaults(apns_bundle_id="com.x", apns_cert_file="/c.p12").sender
    assert by_certificate.problems() == []
    assert (
        "NOTI_CREDENTIAL: a credential is namespace/name, such as noti/dev"
        in Settings.defaults(credential="dev").sender.problems()
    )
