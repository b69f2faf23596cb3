"""The operator's channel decisions, plainly: a channel's Ready condition, a broadcast campaign's payload and end."""

from __future__ import annotations

from noti.apns.channels import ChannelAnswer
from noti.operator.channels import Unusable, broadcast_finished, broadcast_payload, ready
from noti.operator.phases import Action


def test_a_created_channel_is_ready_with_its_id() -> None:
    condition = ready(ChannelAnswer(201, channel_id="abc="), "abc=")
    assert (condition.status, condition.reason, condition.message) == (True, "Created", "APNs channel abc=")


def test_a_refused_create_is_not_ready_with_apples_reason_and_what_it_means() -> None:
    condition = ready(ChannelAnswer(400, "FeatureNotEnabled"), None)
    assert (condition.status, condition.reason) == (False, "FeatureNotEnabled")
    assert "Broadcast capability" in condition.message


def test_an_unreachable_apns_and_a_missing_credential_say_so() -> None:
    assert ready(ChannelAnswer(0, "ConnectError"), None).reason == "ConnectError"
    missing = ready(None, None, Unusable("CredentialNotFound", "APNsCredential ns/shop not found"))
    assert (missing.status, missing.reason, missing.message) == (
        False,
        "CredentialNotFound",
        "APNsCredential ns/shop not found",
    )


def test_a_broadcast_campaign_payload_is_a_live_activity_update() -> None:
    payload = broadcast_payload({"event": "end", "contentState": {"home": 3}, "dismissalDate": 1_900_000_000,
                                 "alert": {"title": "Full time", "sound": "whistle.caf"}})  # fmt: skip
    aps = payload["aps"]
    assert (aps["event"], aps["content-state"], aps["dismissal-date"]) == ("end", {"home": 3}, 1_900_000_000)
    assert aps["alert"] == {"title": "Full time"} and aps["sound"] == "whistle.caf"
    assert isinstance(aps["timestamp"], int) and "stale-date" not in aps


def test_a_broadcast_campaign_completes_when_sent_and_fails_when_refused() -> None:
    done = broadcast_finished(("sent", None))
    assert (done.phase, done.action, done.conditions[0].type) == ("Completed", Action.FINISH, "Complete")
    refused = broadcast_finished(("failed", "APNs answered 400 ChannelNotRegistered"))
    assert (refused.phase, refused.conditions[0].type) == ("Failed", "Failed")
    assert "ChannelNotRegistered" in refused.message
