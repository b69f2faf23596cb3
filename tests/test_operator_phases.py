"""A campaign's next step and status, and status conditions, decided without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from noti.operator.conditions import changed, conditions_with
from noti.operator.phases import Action, counts, next_step
from noti.queue import CampaignProgress

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def step(**overrides: Any) -> tuple[str, str, Action, float]:
    arguments: dict[str, Any] = {
        "credential": "shop/app", "credential_found": True, "start_at": None, "suspend": False, "started": False,
        "fanned_out": False, "progress": None, "now": NOW, "interval": 5.0, **overrides,
    }  # fmt: skip
    result = next_step(**arguments)
    return result.phase, result.reason, result.action, result.wait


def progress(total: int, sent: int = 0, failed: int = 0, invalid: int = 0) -> CampaignProgress:
    return CampaignProgress.parse({b"total": total, b"queued": total}, {"sent": sent, "failed": failed,
                                                                          "invalid_token": invalid})  # fmt: skip


def test_a_campaign_waits_for_its_credential_then_its_start_then_fans_out() -> None:
    assert step(credential_found=False) == ("Pending", "CredentialNotFound", Action.WAIT, 5.0)
    assert step(start_at=NOW + timedelta(seconds=2)) == ("Scheduled", "Waiting", Action.WAIT, 2.0)
    assert step(start_at=NOW + timedelta(days=2)) == ("Scheduled", "Waiting", Action.WAIT, 5.0)
    assert step(start_at=NOW - timedelta(seconds=1)) == ("Running", "FanningOut", Action.FAN_OUT, 0.0)
    # Suspended before it started, it waits; once started (an operator restart), the fan-out resumes.
    assert step(suspend=True) == ("Paused", "Suspended", Action.WAIT, 5.0)
    assert step(suspend=True, started=True)[2] is Action.FAN_OUT


def test_after_the_fan_out_it_follows_the_spec_until_every_record_is_final() -> None:
    running = step(fanned_out=True, progress=progress(10, sent=4))
    assert running == ("Running", "Sending", Action.FOLLOW, 5.0)
    assert step(fanned_out=True, progress=progress(10, sent=4), suspend=True)[:3] == ("Paused", "Suspended",
                                                                                      Action.FOLLOW)  # fmt: skip
    assert step(fanned_out=True, progress=progress(10, sent=7, failed=1, invalid=2))[:3] == (
        "Completed", "Finished", Action.FINISH)  # fmt: skip
    assert step(fanned_out=True, progress=progress(0))[2] is Action.FINISH  # an empty audience is done at once
    assert step(fanned_out=True, credential_found=False, progress=progress(10))[0] == "Pending"


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
