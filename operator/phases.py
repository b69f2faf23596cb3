"""What a NotificationCampaign does next, and what its status says meanwhile (no I/O here).

Pending until its credential exists, Scheduled until ``startAt``, Paused while suspended,
Running from the fan-out on, Completed once every record is final.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from noti.queue import CampaignProgress


class Action(StrEnum):
    WAIT = "wait"  # look again after ``Step.wait`` seconds
    FAN_OUT = "fan_out"  # write the records and queue them (resumable), then look again
    FOLLOW = "follow"  # keep the senders' rate and suspension in step with the spec, look again
    FINISH = "finish"  # the campaign is over: stop looking


@dataclass(frozen=True, slots=True)
class Step:
    phase: str
    reason: str  # of the Ready condition
    message: str
    action: Action
    wait: float = 0.0


def next_step(
    *,
    credential: str,
    credential_found: bool,
    start_at: datetime | None,
    suspend: bool,
    started: bool,
    fanned_out: bool,
    progress: CampaignProgress | None,
    now: datetime,
    interval: float,
) -> Step:
    """The next step of a campaign; ``progress`` is needed once ``fanned_out``."""
    if not credential_found:
        return Step("Pending", "CredentialNotFound", f"APNsCredential {credential} not found", Action.WAIT, interval)
    if not fanned_out:
        if start_at is not None and start_at > now:
            wait = min((start_at - now).total_seconds(), interval)
            return Step("Scheduled", "Waiting", f"starts at {start_at.isoformat()}", Action.WAIT, wait)
        if suspend and not started:
            return Step("Paused", "Suspended", "suspended before it started", Action.WAIT, interval)
        return Step("Running", "FanningOut", "writing and queueing its notifications", Action.FAN_OUT)
    if progress is None:
        raise ValueError("a campaign that fanned out needs its progress")
    if progress.finished >= progress.total:
        sent = progress.by_status["sent"]
        return Step("Completed", "Finished", f"{sent} of {progress.total} sent", Action.FINISH)
    message = f"{progress.finished} of {progress.total} finished"
    if suspend:
        return Step("Paused", "Suspended", message, Action.FOLLOW, interval)
    return Step("Running", "Sending", message, Action.FOLLOW, interval)


def counts(progress: CampaignProgress) -> dict[str, Any]:
    """The status fields a campaign's progress fills."""
    return {
        "total": progress.total,
        "queued": progress.queued,
        "sent": progress.by_status["sent"],
        "failed": progress.by_status["failed"],
        "invalidTokens": progress.by_status["invalid_token"],
    }
