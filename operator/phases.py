"""What a NotificationCampaign does next, and what its status says meanwhile (no I/O here).

Phases only move forward: Pending (waiting for its credential) → Scheduled (waiting for
``startAt``) → Running ⇄ Paused → Completed or Failed. Once a phase is reached, a later
look never shows an earlier one: a credential that disappears mid-campaign is a condition
(``CredentialFound=False``), not a return to Pending.

Conditions follow a Job's: ``Complete`` or ``Failed`` is set, True, once the campaign is
over, so ``kubectl wait --for=condition=Complete`` returns exactly when it finished well;
``CredentialFound`` and ``Suspended`` say why it waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from noti.operator.conditions import Condition
from noti.queue import CampaignProgress

PHASES = ("Pending", "Scheduled", "Running", "Paused", "Completed", "Failed")
_RANK = {"Pending": 0, "Scheduled": 1, "Running": 2, "Paused": 2, "Completed": 3, "Failed": 3}
FINISHED = ("Completed", "Failed")


class Action(StrEnum):
    WAIT = "wait"  # look again after ``Step.wait`` seconds
    FAN_OUT = "fan_out"  # write the records and queue them (resumable), reporting progress meanwhile
    FOLLOW = "follow"  # keep the senders' rate and suspension in step with the spec, look again
    FINISH = "finish"  # the campaign is over: stop looking


@dataclass(frozen=True, slots=True)
class Step:
    phase: str
    reason: str  # why, in one word: the reason of the Event a transition posts
    message: str
    action: Action
    wait: float = 0.0
    conditions: tuple[Condition, ...] = ()

    @property
    def warning(self) -> bool:
        """Whether the Event of this step is a Warning (a failure, or waiting for what is missing)."""
        return self.phase == "Failed" or any(c.type == "CredentialFound" and not c.status for c in self.conditions)


def failed(reason: str, message: str) -> Step:
    """A campaign that cannot run: Failed, with nothing (more) queued."""
    return Step("Failed", reason, message, Action.FINISH, conditions=(Condition("Failed", True, reason, message),))


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
    phase: str | None = None,
    conflict: str | None = None,
) -> Step:
    """The next step of a campaign in ``phase``; ``progress`` is needed once ``fanned_out``. ``conflict``
    says why its credential, found, may not send (another credential serves its app): it waits as for a
    missing one."""
    if not credential_found:
        found = Condition("CredentialFound", False, "CredentialNotFound", f"APNsCredential {credential} not found")
    elif conflict is not None:
        found = Condition("CredentialFound", False, "BundleConflict", f"APNsCredential {credential}: {conflict}")
    else:
        found = Condition("CredentialFound", True, "CredentialFound", f"APNsCredential {credential}")
    paused = Condition("Suspended", suspend, "Suspended" if suspend else "NotSuspended")
    step = _decide(credential, found, paused, start_at, suspend, started, fanned_out, progress, now, interval)
    if phase in _RANK and _RANK[step.phase] < _RANK[phase]:
        # Forward only: keep the phase reached; the conditions and message say what holds it up.
        step = Step(phase, step.reason, step.message, step.action, step.wait, step.conditions)
    return step


def _decide(
    credential: str, found: Condition, paused: Condition, start_at: datetime | None, suspend: bool, started: bool,
    fanned_out: bool, progress: CampaignProgress | None, now: datetime, interval: float,
) -> Step:  # fmt: skip
    if not fanned_out:
        if start_at is not None and start_at > now and not started:
            wait = min((start_at - now).total_seconds(), interval)
            return Step("Scheduled", "Scheduled", f"starts at {start_at.isoformat()}", Action.WAIT, wait,
                        (found, paused))  # fmt: skip
        if not found.status:
            return Step("Pending", found.reason, found.message, Action.WAIT, interval, (found, paused))
        if suspend and not started:
            return Step("Paused", "Suspended", "suspended before it started", Action.WAIT, interval, (found, paused))
        return Step("Running", "FanningOut", "writing and queueing its notifications", Action.FAN_OUT, 0.0,
                    (found, paused))  # fmt: skip
    if progress is None:
        raise ValueError("a campaign that fanned out needs its progress")
    if progress.finished >= progress.total:
        return _finished(progress, (found, paused))
    message = f"{progress.finished} of {progress.total} finished, {progress.by_status['sent']} sent"
    if not found.status:
        message += f"; {found.message}"
    if suspend:
        return Step("Paused", "Suspended", message, Action.FOLLOW, interval, (found, paused))
    return Step("Running", "Sending", message, Action.FOLLOW, interval, (found, paused))


def _finished(progress: CampaignProgress, waiting: tuple[Condition, ...]) -> Step:
    by = progress.by_status
    message = (
        f"{by['sent']} of {progress.total} sent, {by['failed']} failed, {by['invalid_token']} invalid tokens"
        if progress.total
        else "the audience is empty: nothing to send"
    )
    if progress.total and not by["sent"]:
        # Nothing reached a device: calling that Complete would let `kubectl wait` report success.
        return Step("Failed", "NothingDelivered", message, Action.FINISH,
                    conditions=(*waiting, Condition("Failed", True, "NothingDelivered", message)))  # fmt: skip
    return Step("Completed", "Completed", message, Action.FINISH,
                conditions=(*waiting, Condition("Complete", True, "Completed", message)))  # fmt: skip


def counts(progress: CampaignProgress) -> dict[str, Any]:
    """The status fields a campaign's progress fills."""
    return {
        "total": progress.total,
        "queued": progress.queued,
        "sent": progress.by_status["sent"],
        "failed": progress.by_status["failed"],
        "invalidTokens": progress.by_status["invalid_token"],
    }
