"""The retry policy: what the sender does with each APNs answer, as a table (no I/O)."""

from __future__ import annotations

import pytest

from noti.apns.client import APNsResult
from noti.apns.reasons import CONNECTION_ERROR, Outcome, classify
from noti.sender.policy import (
    Decision,
    Finish,
    Limits,
    Retry,
    StopCredential,
    TopicEvidence,
    TopicGuard,
    backoff_delay,
    decide,
    final_status,
)
from noti.sender.topics import TopicStreak
from noti.store.models import NotificationStatus

LIMITS = Limits(max_attempts=3, backoff_base=1.0, backoff_max=300.0)
SENT, FAILED, INVALID = NotificationStatus.SENT, NotificationStatus.FAILED, NotificationStatus.INVALID_TOKEN


def answer(status: int, reason: str | None) -> APNsResult:
    """APNs' answer as the client classifies it."""
    known = classify(status, reason)
    return APNsResult(status, reason, None, known.outcome, known.retry_after)


def no_answer() -> APNsResult:
    """The connection failed before APNs answered."""
    return APNsResult(0, "ConnectError", None, CONNECTION_ERROR.outcome, CONNECTION_ERROR.retry_after)


def without_jitter(result: APNsResult, attempt: int) -> Decision:
    return decide(result, attempt, LIMITS, rng=lambda: 1.0)


@pytest.mark.parametrize(
    ("result", "attempt", "decision"),
    [
        (answer(200, None), 0, Finish(SENT, "Success")),
        (answer(200, None), 2, Finish(SENT, "Success")),  # the last attempt that succeeds is a success
        (answer(410, "Unregistered"), 0, Finish(INVALID, "Unregistered")),
        (answer(400, "BadDeviceToken"), 1, Finish(INVALID, "BadDeviceToken")),
        (answer(413, "PayloadTooLarge"), 0, Finish(FAILED, "PayloadTooLarge")),  # never deliverable: no retry
        (answer(400, "BadCollapseId"), 0, Finish(FAILED, "BadCollapseId")),
        (answer(418, None), 0, Finish(FAILED, "Unknown")),  # an unknown 4xx without a reason
        (answer(503, "ServiceUnavailable"), 0, Retry(2.0, "ServiceUnavailable")),  # its hint beats 1 s
        (answer(500, "InternalServerError"), 1, Retry(2.0, "InternalServerError")),
        (answer(500, "InternalServerError"), 2, Finish(FAILED, "InternalServerError")),  # attempts used up
        (answer(502, None), 0, Retry(1.0, "Unknown")),
        (no_answer(), 0, Retry(1.0, "ConnectError")),
        (no_answer(), 2, Finish(FAILED, "ConnectError")),
        (answer(403, "InvalidProviderToken"), 0, StopCredential("InvalidProviderToken")),
        (answer(403, "BadCertificateEnvironment"), 2, StopCredential("BadCertificateEnvironment")),  # never fails
        (answer(403, "UnrelatedKeyIdInToken"), 0, StopCredential("UnrelatedKeyIdInToken")),
    ],
)
def test_decision(result: APNsResult, attempt: int, decision: Decision) -> None:
    assert without_jitter(result, attempt) == decision


def test_retry_waits_at_least_as_long_as_apns_asks() -> None:
    hinted = APNsResult(429, "TooManyRequests", None, Outcome.RETRYABLE, retry_after=45.0)
    assert decide(hinted, 0, LIMITS, rng=lambda: 0.0) == Retry(45.0, "TooManyRequests")


def test_a_single_attempt_allowed_means_no_retry() -> None:
    one = Limits(max_attempts=1, backoff_base=1.0, backoff_max=300.0)
    assert decide(answer(503, "ServiceUnavailable"), 0, one) == Finish(FAILED, "ServiceUnavailable")


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Outcome.SUCCESS, SENT),
        (Outcome.INVALID_TOKEN, INVALID),
        (Outcome.PERMANENT, FAILED),
        (Outcome.RETRYABLE, None),
        (Outcome.REFRESH_TOKEN, None),
        (Outcome.CREDENTIAL, None),  # the credential is at fault, not the notification
    ],
)
def test_final_status(outcome: Outcome, status: NotificationStatus | None) -> None:
    assert final_status(outcome) is status


def test_backoff_grows_with_jitter_and_honours_hint() -> None:
    delays = [backoff_delay(attempt, 0.0, 1.0, 300.0, rng=lambda: 1.0) for attempt in range(10)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0] and delays[-1] == 300.0
    assert backoff_delay(0, 60.0, 1.0, 300.0, rng=lambda: 0.0) == 60.0
    assert backoff_delay(3, 0.0, 1.0, 300.0, rng=lambda: 0.0) == 4.0  # half the exponential at least


# DeviceTokenNotForTopic: a token of another app, or every token when the credential's topic is wrong.
GUARD = TopicGuard(answers=5, tokens=3)
TOPIC_LIMITS = Limits(max_attempts=3, backoff_base=1.0, backoff_max=300.0, topic_guard=GUARD)
NOT_FOR_TOPIC = answer(400, "DeviceTokenNotForTopic")


def _topic(result: APNsResult, attempt: int, evidence: TopicEvidence) -> Decision:
    return decide(result, attempt, TOPIC_LIMITS, rng=lambda: 1.0, topic=evidence)


def test_device_token_not_for_topic_before_any_success_is_retried_not_a_dead_device() -> None:
    evidence = TopicEvidence(streak=1, distinct=1, succeeded=False)
    assert _topic(NOT_FOR_TOPIC, 0, evidence) == Retry(1.0, "DeviceTokenNotForTopic")


def test_device_token_not_for_topic_once_the_topic_worked_is_a_token_of_another_app() -> None:
    evidence = TopicEvidence(streak=1, distinct=1, succeeded=True)
    assert _topic(NOT_FOR_TOPIC, 0, evidence) == Finish(INVALID, "DeviceTokenNotForTopic")


@pytest.mark.parametrize(
    ("streak", "distinct", "succeeded", "decision"),
    [
        (5, 3, False, StopCredential("DeviceTokenNotForTopic")),  # the threshold: the topic is wrong
        (50, 3, True, StopCredential("DeviceTokenNotForTopic")),  # a success long ago does not excuse 50 in a row
        (4, 3, False, Retry(1.0, "DeviceTokenNotForTopic")),  # one answer short
        (50, 2, False, Retry(1.0, "DeviceTokenNotForTopic")),  # a few tokens retried over and over are no pattern
    ],
)
def test_many_device_token_not_for_topic_in_a_row_across_tokens_stop_the_credential(
    streak: int, distinct: int, succeeded: bool, decision: Decision
) -> None:
    assert _topic(NOT_FOR_TOPIC, 0, TopicEvidence(streak, distinct, succeeded)) == decision


def test_device_token_not_for_topic_never_after_a_success_ends_failed_not_invalid() -> None:
    assert _topic(NOT_FOR_TOPIC, 2, TopicEvidence(2, 2, False)) == Finish(FAILED, "DeviceTokenNotForTopic")


def test_the_streak_ends_at_a_success_and_counts_distinct_tokens_up_to_the_guard() -> None:
    streak = TopicStreak(distinct_needed=3)
    for token in ["a", "a", "b", "c", "d"]:
        evidence = streak.not_for_topic(token)
    assert evidence == TopicEvidence(5, 3, False)
    streak.success()
    assert streak.not_for_topic("a") == TopicEvidence(1, 1, True)


def test_a_refused_credential_is_probed_again_later_and_later_up_to_a_cap() -> None:
    delays = [backoff_delay(tries, 0.0, 5.0, 300.0, rng=lambda: 1.0) for tries in range(10)]
    assert delays[:4] == [5.0, 10.0, 20.0, 40.0]
    assert max(delays) == 300.0 == delays[-1]
