"""A campaign's next step and status, and status conditions, decided without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from noti.operator.conditions import (
    Condition,
    changed,
    conditions_with,
    credential_conditions,
    route_condition,
    transitions,
    with_conditions,
)
from noti.operator.phases import Action, Step, counts, failed, next_step
from noti.queue import CampaignProgress
from noti.routes import Claim, Claimed, Route

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def decide(**overrides: Any) -> Step:
    arguments: dict[str, Any] = {
        "credential": "shop/app", "credential_found": True, "start_at": None, "suspend": False, "started": False,
        "fanned_out": False, "progress": None, "now": NOW, "interval": 5.0, **overrides,
    }  # fmt: skip
    return next_step(**arguments)


def step(**overrides: Any) -> tuple[str, str, Action, float]:
    result = decide(**overrides)
    return result.phase, result.reason, result.action, result.wait


def progress(total: int, sent: int = 0, failed: int = 0, invalid: int = 0) -> CampaignProgress:
    return CampaignProgress.parse({b"total": total, b"queued": total}, {"sent": sent, "failed": failed,
                                                                          "invalid_token": invalid})  # fmt: skip


def condition(result: Step, type_: str) -> tuple[bool, str] | None:
    found = next((c for c in result.conditions if c.type == type_), None)
    return (found.status, found.reason) if found else None


def test_a_campaign_whose_credential_another_credential_outranks_waits_saying_so() -> None:
    waiting = decide(conflict="APNsCredential team-a/shop already serves com.example.app in sandbox")
    assert (waiting.phase, waiting.reason, waiting.action, waiting.warning) == ("Pending", "BundleConflict",
                                                                               Action.WAIT, True)  # fmt: skip
    assert "team-a/shop" in waiting.message and condition(waiting, "CredentialFound") == (False, "BundleConflict")


def test_a_campaign_waits_for_its_credential_then_its_start_then_fans_out() -> None:
    assert step(credential_found=False) == ("Pending", "CredentialNotFound", Action.WAIT, 5.0)
    assert condition(decide(credential_found=False), "CredentialFound") == (False, "CredentialNotFound")
    assert step(start_at=NOW + timedelta(seconds=2)) == ("Scheduled", "Scheduled", Action.WAIT, 2.0)
    assert step(start_at=NOW + timedelta(days=2)) == ("Scheduled", "Scheduled", Action.WAIT, 5.0)
    assert step(start_at=NOW - timedelta(seconds=1)) == ("Running", "FanningOut", Action.FAN_OUT, 0.0)
    # Suspended before it started, it waits; once started (an operator restart), the fan-out resumes.
    assert step(suspend=True) == ("Paused", "Suspended", Action.WAIT, 5.0)
    assert condition(decide(suspend=True), "Suspended") == (True, "Suspended")
    assert step(suspend=True, started=True)[2] is Action.FAN_OUT


def test_after_the_fan_out_it_follows_the_spec_until_every_record_is_final() -> None:
    running = step(fanned_out=True, progress=progress(10, sent=4))
    assert running == ("Running", "Sending", Action.FOLLOW, 5.0)
    assert step(fanned_out=True, progress=progress(10, sent=4), suspend=True)[:3] == ("Paused", "Suspended",
                                                                                      Action.FOLLOW)  # fmt: skip
    done = decide(fanned_out=True, progress=progress(10, sent=7, failed=1, invalid=2))
    assert (done.phase, done.action) == ("Completed", Action.FINISH)
    assert done.message == "7 of 10 sent, 1 failed, 2 invalid tokens"
    assert step(fanned_out=True, progress=progress(0))[:3] == ("Completed", "Completed", Action.FINISH)


def test_only_a_finished_campaign_is_complete() -> None:
    for unfinished in (
        decide(credential_found=False), decide(start_at=NOW + timedelta(hours=1)), decide(suspend=True), decide(),
        decide(fanned_out=True, progress=progress(10, sent=4)),
    ):  # fmt: skip
        assert condition(unfinished, "Complete") is None and condition(unfinished, "Failed") is None
    done = decide(fanned_out=True, progress=progress(10, sent=10))
    assert condition(done, "Complete") == (True, "Completed") and condition(done, "Failed") is None


def test_a_campaign_that_reached_no_device_failed() -> None:
    none_sent = decide(fanned_out=True, progress=progress(198, failed=150, invalid=48))
    assert (none_sent.phase, none_sent.reason) == ("Failed", "NothingDelivered")
    assert condition(none_sent, "Failed") == (True, "NothingDelivered") and condition(none_sent, "Complete") is None
    assert none_sent.message == "0 of 198 sent, 150 failed, 48 invalid tokens" and none_sent.warning


def test_phases_only_move_forward() -> None:
    # The credential disappears mid-campaign: still Running, with the condition saying what is missing.
    gone = decide(fanned_out=True, credential_found=False, progress=progress(10, sent=3), phase="Running")
    assert gone.phase == "Running" and condition(gone, "CredentialFound") == (False, "CredentialNotFound")
    assert "not found" in gone.message and gone.warning
    # ... and before its fan-out finished: it keeps its phase and waits.
    stalled = decide(started=True, credential_found=False, phase="Running")
    assert (stalled.phase, stalled.action) == ("Running", Action.WAIT)
    # A start time moved into the future after the start changes nothing.
    assert step(started=True, start_at=NOW + timedelta(hours=1), phase="Running")[:3] == (
        "Running", "FanningOut", Action.FAN_OUT)  # fmt: skip
    assert decide(credential_found=False, phase="Scheduled").phase == "Scheduled"


def test_a_failed_step_says_why_and_finishes() -> None:
    result = failed("InvalidNotification", "spec.notification: payload of 5042 bytes exceeds 4096")
    assert (result.phase, result.action, result.warning) == ("Failed", Action.FINISH, True)
    assert condition(result, "Failed") == (True, "InvalidNotification")


def test_a_credential_is_ready_only_when_a_sender_can_send_with_it() -> None:
    def ready(**kwargs: Any) -> tuple[str, str]:
        found = next(c for c in credential_conditions(**kwargs) if c.type == "Ready")
        return str(found.status), found.reason

    assert ready(refusal=None, replicas=1, available=0) == ("False", "SendersUnavailable")
    assert ready(refusal=None, replicas=2, available=1) == ("True", "SendersAvailable")
    assert ready(refusal=None, replicas=0, available=0) == ("True", "ScaledToZero")
    assert ready(refusal="InvalidProviderToken", replicas=1, available=1) == ("False", "InvalidProviderToken")
    types = [c.type for c in credential_conditions(refusal=None, replicas=1, available=1)]
    assert types == ["KeyValid", "Available", "Accepted", "Ready"]


def test_a_credential_another_one_serves_the_app_for_is_not_ready_and_names_it() -> None:
    holder = Route("team-a/shop", "TEAM.KEY")
    conflict = route_condition(Claim(Claimed.CONFLICT, holder), "com.example.app", "sandbox")
    assert (conflict.status, conflict.reason) == (False, "BundleConflict") and "team-a/shop" in conflict.message
    ready = next(c for c in credential_conditions(refusal=None, replicas=1, available=1, routed=conflict)
                 if c.type == "Ready")  # fmt: skip
    assert (ready.status, ready.reason, ready.message) == (False, "BundleConflict", conflict.message)
    for outcome, reason in ((Claimed.TAKEN, "RouteHeld"), (Claimed.HELD, "RouteHeld"), (Claimed.SHARED, "RouteShared")):
        routed = route_condition(Claim(outcome, holder), "com.example.app", "sandbox")
        assert (routed.status, routed.reason) == (True, reason)
        assert next(c for c in credential_conditions(refusal=None, replicas=1, available=1, routed=routed)
                    if c.type == "Ready").status  # fmt: skip


def test_transitions_name_the_conditions_that_moved() -> None:
    before = with_conditions(None, [Condition("Ready", False, "SendersUnavailable"), Condition("KeyValid", True, "K")])
    after = with_conditions(before, [Condition("Ready", True, "SendersAvailable"), Condition("KeyValid", True, "K")])
    assert [c["type"] for c in transitions(before, after)] == ["Ready"]
    assert transitions(after, after) == []
    assert [c["type"] for c in transitions(None, after)] == ["Ready", "KeyValid"]


def test_counts_fill_the_status_fields_the_crd_declares() -> None:
    assert counts(progress(10, sent=7, failed=1, invalid=2)) == {
        "total": 10, "queued": 10, "sent": 7, "failed": 1, "invalidTokens": 2,
    }  # fmt: skip


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    first = conditions_with(None, "Ready", True, "SendersDeployed", "1 sender(s)")
    assert [(c["type"], c["status"], c["reason"]) for c in first] == [("Ready", "True", "SendersDeployed")]
    earlier = [{**first[0], "lastTransitionTime": "2026-01-01T00:00:00Z"}, {"type": "Other", "status": "True"}]
    same = conditions_with(earlier, "Ready", True, "SendersDeployed", "3 sender(s)")
    ready = next(c for c in same if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:00Z" and ready["message"] == "3 sender(s)"
    assert {c["type"] for c in same} == {"Ready", "Other"}
    changed = next(c for c in conditions_with(earlier, "Ready", False, "KeyInvalid") if c["type"] == "Ready")
    assert changed["status"] == "False" and changed["lastTransitionTime"] != "2026-01-01T00:00:00Z"


def test_a_status_patch_holds_only_what_changed() -> None:
    current = {"backlog": 5, "senderReplicas": 1, "conditions": [{"type": "Ready", "status": "True"}]}
    wanted = {"backlog": 5, "senderReplicas": 2, "conditions": [{"type": "Ready", "status": "True"}], "new": 1}
    assert changed(current, wanted) == {"senderReplicas": 2, "new": 1}
    assert changed(None, {"backlog": 0}) == {"backlog": 0}
    assert changed(wanted, wanted) == {}


def test_a_certificate_credential_says_its_certificate_was_loaded_not_a_key() -> None:
    key = next(c for c in credential_conditions(refusal=None, replicas=1, available=1, certificate=True)
               if c.type == "KeyValid")  # fmt: skip
    assert (key.status, key.reason) == (True, "CertificateLoaded")
