"""The retry policy: what one APNs answer means for its notification — finish, retry after a backoff, or stop
the credential. Pure (no I/O, no clock); the sender carries the decision out."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from noti.apns.client import APNsResult
from noti.apns.reasons import Outcome
from noti.store.models import NotificationStatus


@dataclass(frozen=True, slots=True)
class Limits:
    """How long the sender keeps trying one notification (from ``NOTI_SENDER_MAX_ATTEMPTS`` and the backoff)."""

    max_attempts: int
    backoff_base: float  # seconds before the first retry; doubles each attempt
    backoff_max: float  # the longest wait between attempts


@dataclass(frozen=True, slots=True)
class Finish:
    """The record ends in ``status``; ``reason`` is APNs' (or Success/Unknown)."""

    status: NotificationStatus
    reason: str


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again in ``delay`` seconds, through the delayed-retry set (no coroutine sleeps holding a slot)."""

    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class StopCredential:
    """APNs refused the credential itself: stop its traffic; the notification waits, unacknowledged, for a fix."""

    reason: str


Decision = Finish | Retry | StopCredential


def final_status(outcome: Outcome) -> NotificationStatus | None:
    """The record status an APNs outcome ends in, or None when it does not end the notification."""
    return {
        Outcome.SUCCESS: NotificationStatus.SENT,
        Outcome.INVALID_TOKEN: NotificationStatus.INVALID_TOKEN,
        Outcome.PERMANENT: NotificationStatus.FAILED,
    }.get(outcome)


def backoff_delay(
    attempt: int, hint: float, base: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Seconds before attempt ``attempt + 1``: exponential with equal jitter, never below APNs' hint."""
    exponential = min(cap, base * 2**attempt)
    return max(hint, exponential / 2 + rng() * exponential / 2)


def decide(result: APNsResult, attempt: int, limits: Limits, rng: Callable[[], float] = random.random) -> Decision:
    """What to do after attempt ``attempt`` (0 for the first) of a notification was answered with ``result``."""
    reason = result.reason or ("Success" if result.ok else "Unknown")
    status = final_status(result.outcome)
    if status is not None:
        return Finish(status, reason)
    if result.outcome is Outcome.CREDENTIAL:
        return StopCredential(reason)
    if attempt + 1 >= limits.max_attempts:
        return Finish(NotificationStatus.FAILED, reason)
    return Retry(backoff_delay(attempt, result.retry_after, limits.backoff_base, limits.backoff_max, rng), reason)
