"""The retry policy: what one APNs answer means for its notification — finish, retry after a backoff, or stop
the credential. Pure (no I/O, no clock); the sender carries the decision out.

DeviceTokenNotForTopic is Apple's answer both to a token of another app and to every token when the
credential's topic (bundle id) is wrong, so that answer alone does not deactivate a device:

- once this sender has had a success, its topic works, and the token belongs to another app: the record
  ends ``invalid_token`` and the device is deactivated;
- before any success, the notification is retried (the device stays active), so that a wrong topic
  deactivates nothing; it ends ``failed`` (device active) when its attempts run out;
- ``TopicGuard.answers`` of them in a row across at least ``TopicGuard.tokens`` distinct device tokens,
  with no success between, stop the credential like a refused key (reason DeviceTokenNotForTopic): the
  notifications wait, nothing is deactivated, the status says so, and the sender probes again with backoff.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from noti.apns.client import APNsResult
from noti.apns.reasons import Outcome
from noti.store.tables import NotificationStatus

NOT_FOR_TOPIC = "DeviceTokenNotForTopic"


@dataclass(frozen=True, slots=True)
class TopicGuard:
    """When DeviceTokenNotForTopic answers say the credential's topic is wrong, not the device tokens."""

    answers: int = 20  # in a row, with no success between
    tokens: int = 10  # distinct device tokens among them (one token retried is not a pattern)


@dataclass(frozen=True, slots=True)
class TopicEvidence:
    """What the sender has seen around one DeviceTokenNotForTopic answer (see the module docstring)."""

    streak: int  # DeviceTokenNotForTopic answers in a row, no success between, this one included
    distinct: int  # distinct device tokens among them (counted up to what the guard needs)
    succeeded: bool  # the sender has had a success with its topic since it started


@dataclass(frozen=True, slots=True)
class Limits:
    """How long the sender keeps trying one notification (from ``NOTI_SENDER_MAX_ATTEMPTS`` and the backoff)."""

    max_attempts: int
    backoff_base: float  # seconds before the first retry; doubles each attempt
    backoff_max: float  # the longest wait between attempts
    topic_guard: TopicGuard = TopicGuard()


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


def decide(
    result: APNsResult,
    attempt: int,
    limits: Limits,
    rng: Callable[[], float] = random.random,
    *,
    topic: TopicEvidence | None = None,
) -> Decision:
    """What to do after attempt ``attempt`` (0 for the first) of a notification was answered with ``result``.

    ``topic`` is the evidence around a DeviceTokenNotForTopic answer; without it that answer is final.
    """
    reason = result.reason or ("Success" if result.ok else "Unknown")
    if topic is not None and result.reason == NOT_FOR_TOPIC:
        guard = limits.topic_guard
        if topic.streak >= guard.answers and topic.distinct >= guard.tokens:
            return StopCredential(NOT_FOR_TOPIC)
        if topic.succeeded:
            return Finish(NotificationStatus.INVALID_TOKEN, NOT_FOR_TOPIC)
        if attempt + 1 >= limits.max_attempts:
            return Finish(NotificationStatus.FAILED, NOT_FOR_TOPIC)
        return Retry(backoff_delay(attempt, 0.0, limits.backoff_base, limits.backoff_max, rng), NOT_FOR_TOPIC)
    status = final_status(result.outcome)
    if status is not None:
        return Finish(status, reason)
    if result.outcome is Outcome.CREDENTIAL:
        return StopCredential(reason)
    if attempt + 1 >= limits.max_attempts:
        return Finish(NotificationStatus.FAILED, reason)
    return Retry(backoff_delay(attempt, result.retry_after, limits.backoff_base, limits.backoff_max, rng), reason)
