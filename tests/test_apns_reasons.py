"""Every reason Apple documents maps to what the sender must do."""

from __future__ import annotations

import pytest

from noti.apns.reasons import REASONS, STATUS_OF_REASON, Outcome, classify

DOCUMENTED = {
    400: ["BadCollapseId", "BadDeviceToken", "BadExpirationDate", "BadMessageId", "BadPriority", "BadTopic",
          "DeviceTokenNotForTopic", "DuplicateHeaders", "IdleTimeout", "InvalidPushType", "MissingDeviceToken",
          "MissingTopic", "PayloadEmpty", "TopicDisallowed"],
    403: ["BadCertificate", "BadCertificateEnvironment", "ExpiredProviderToken", "Forbidden", "InvalidProviderToken",
          "MissingProviderToken", "UnrelatedKeyIdInToken", "BadEnvironmentKeyInToken"],
    404: ["BadPath"], 405: ["MethodNotAllowed"], 410: ["ExpiredToken", "Unregistered"], 413: ["PayloadTooLarge"],
    429: ["TooManyProviderTokenUpdates", "TooManyRequests"], 500: ["InternalServerError"],
    503: ["ServiceUnavailable", "Shutdown"],
}  # fmt: skip


def test_the_table_holds_exactly_the_documented_reasons_with_their_status_codes() -> None:
    documented = {reason: status for status, reasons in DOCUMENTED.items() for reason in reasons}
    assert set(REASONS) == set(documented)  # both ways: nothing missing, nothing made up
    assert documented == STATUS_OF_REASON


@pytest.mark.parametrize(
    ("status", "reason"), [(status, reason) for status, reasons in DOCUMENTED.items() for reason in reasons]
)
def test_each_documented_answer_is_classified_by_its_reason(status: int, reason: str) -> None:
    assert classify(status, reason) is REASONS[reason]


@pytest.mark.parametrize(
    ("status", "reason", "outcome"),
    [
        (200, None, Outcome.SUCCESS),
        (410, "Unregistered", Outcome.INVALID_TOKEN),
        (410, "ExpiredToken", Outcome.INVALID_TOKEN),
        (400, "BadDeviceToken", Outcome.INVALID_TOKEN),
        (400, "DeviceTokenNotForTopic", Outcome.INVALID_TOKEN),
        (429, "TooManyRequests", Outcome.RETRYABLE),
        (500, "InternalServerError", Outcome.RETRYABLE),
        (503, "ServiceUnavailable", Outcome.RETRYABLE),
        (503, "Shutdown", Outcome.RETRYABLE),
        (413, "PayloadTooLarge", Outcome.PERMANENT),
        (400, "BadTopic", Outcome.PERMANENT),
        (403, "ExpiredProviderToken", Outcome.REFRESH_TOKEN),
        (403, "InvalidProviderToken", Outcome.CREDENTIAL),
        (403, "BadCertificateEnvironment", Outcome.CREDENTIAL),
        (403, "MissingProviderToken", Outcome.CREDENTIAL),
        (502, None, Outcome.RETRYABLE),
        (418, "SomethingNew", Outcome.PERMANENT),
    ],
)
def test_classification(status: int, reason: str | None, outcome: Outcome) -> None:
    assert classify(status, reason).outcome is outcome


def test_retryable_reasons_carry_a_backoff_hint() -> None:
    assert all(c.retry_after > 0 for c in REASONS.values() if c.outcome is Outcome.RETRYABLE)
