"""Every reason Apple documents maps to what the sender must do."""

from __future__ import annotations

import pytest

from noti.apns.reasons import REASONS, Outcome, classify

DOCUMENTED = {
    400: ["BadCollapseId", "BadDeviceToken", "BadExpirationDate", "BadMessageId", "BadPriority", "BadTopic",
          "DeviceTokenNotForTopic", "DuplicateHeaders", "IdleTimeout", "InvalidPushType", "MissingDeviceToken",
          "MissingTopic", "PayloadEmpty", "TopicDisallowed"],
    403: ["BadCertificate", "BadCertificateEnvironment", "ExpiredProviderToken", "Forbidden", "InvalidProviderToken",
          "MissingProviderToken"],
    404: ["BadPath"], 405: ["MethodNotAllowed"], 410: ["ExpiredToken", "Unregistered"], 413: ["PayloadTooLarge"],
    429: ["TooManyProviderTokenUpdates", "TooManyRequests"], 500: ["InternalServerError"],
    503: ["ServiceUnavailable", "Shutdown"],
}  # fmt: skip


def test_every_documented_reason_is_in_the_table() -> None:
    assert {reason for reasons in DOCUMENTED.values() for reason in reasons} <= set(REASONS)


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
