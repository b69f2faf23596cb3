"""Every response reason Apple documents, classified (a table, no I/O)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    RETRYABLE = "retryable"  # try again later (backoff); the notification is not lost
    REFRESH_TOKEN = "refresh_token"  # the provider token expired: mint a new one, retry at once
    INVALID_TOKEN = "invalid_token"  # the device token is dead: deactivate the device
    PERMANENT = "permanent"  # this notification can never be delivered as it is
    CREDENTIAL = "credential"  # the credential itself is wrong: stop sending with it


@dataclass(frozen=True, slots=True)
class Classification:
    outcome: Outcome
    retry_after: float = 0.0  # seconds to wait before the next attempt, a hint for the backoff
    description: str = ""


def _c(outcome: Outcome, description: str, retry_after: float = 0.0) -> Classification:
    return Classification(outcome, retry_after, description)


R, P, I, C = Outcome.RETRYABLE, Outcome.PERMANENT, Outcome.INVALID_TOKEN, Outcome.CREDENTIAL  # noqa: E741

REASONS: dict[str, Classification] = {
    # 400
    "BadCollapseId": _c(P, "apns-collapse-id is longer than 64 bytes"),
    "BadDeviceToken": _c(I, "the device token is invalid or for the other environment"),
    "BadExpirationDate": _c(P, "apns-expiration is invalid"),
    "BadMessageId": _c(P, "apns-id is not a UUID"),
    "BadPriority": _c(P, "apns-priority is not 10, 5 or 1"),
    "BadTopic": _c(P, "apns-topic is invalid"),
    # Also every token's answer when the credential's topic is wrong: the sender weighs it (noti.sender.policy).
    "DeviceTokenNotForTopic": _c(I, "the device token does not belong to this topic"),
    "DuplicateHeaders": _c(P, "a header was repeated"),
    "IdleTimeout": _c(R, "the connection was idle too long", 1.0),
    "InvalidPushType": _c(P, "apns-push-type is invalid"),
    "MissingDeviceToken": _c(P, "the request has no device token"),
    "MissingTopic": _c(P, "apns-topic is required for this credential"),
    "PayloadEmpty": _c(P, "the payload is empty"),
    "TopicDisallowed": _c(P, "pushing to this topic is not allowed"),
    # 403
    "BadCertificate": _c(C, "the certificate is invalid"),
    "BadCertificateEnvironment": _c(C, "the certificate is for the other environment"),
    "ExpiredProviderToken": _c(Outcome.REFRESH_TOKEN, "the provider token is older than an hour"),
    "Forbidden": _c(C, "the action is not allowed"),
    "InvalidProviderToken": _c(C, "the provider token is invalid or signed with an unknown key"),
    "MissingProviderToken": _c(C, "no certificate or provider token was given"),
    "UnrelatedKeyIdInToken": _c(C, "the key id in the provider token is not related to this team"),
    "BadEnvironmentKeyInToken": _c(C, "the key in the provider token is for the other environment"),
    # 404, 405
    "BadPath": _c(P, "the request path is wrong"),
    "MethodNotAllowed": _c(P, "only POST is allowed"),
    # 410
    "ExpiredToken": _c(I, "the device token has expired"),
    "Unregistered": _c(I, "the device token is no longer active for the topic"),
    # 413
    "PayloadTooLarge": _c(P, "the payload is too large"),
    # 429
    "TooManyProviderTokenUpdates": _c(R, "the provider token changed too often", 60.0),
    "TooManyRequests": _c(R, "too many requests to the same device token", 5.0),
    # 500, 503
    "InternalServerError": _c(R, "APNs had an internal error", 1.0),
    "ServiceUnavailable": _c(R, "APNs is unavailable", 2.0),
    "Shutdown": _c(R, "the APNs server is shutting down", 0.5),
}

# The HTTP status Apple answers each reason with ("Handling notification responses from APNs").
STATUS_OF_REASON: dict[str, int] = {
    "BadCollapseId": 400,
    "BadDeviceToken": 400,
    "BadExpirationDate": 400,
    "BadMessageId": 400,
    "BadPriority": 400,
    "BadTopic": 400,
    "DeviceTokenNotForTopic": 400,
    "DuplicateHeaders": 400,
    "IdleTimeout": 400,
    "InvalidPushType": 400,
    "MissingDeviceToken": 400,
    "MissingTopic": 400,
    "PayloadEmpty": 400,
    "TopicDisallowed": 400,
    "BadCertificate": 403,
    "BadCertificateEnvironment": 403,
    "ExpiredProviderToken": 403,
    "Forbidden": 403,
    "InvalidProviderToken": 403,
    "MissingProviderToken": 403,
    "UnrelatedKeyIdInToken": 403,
    "BadEnvironmentKeyInToken": 403,
    "BadPath": 404,
    "MethodNotAllowed": 405,
    "ExpiredToken": 410,
    "Unregistered": 410,
    "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
    "Shutdown": 503,
}

_BY_STATUS: dict[int, Classification] = {
    400: _c(P, "bad request"),
    403: _c(C, "forbidden"),
    404: _c(P, "not found"),
    405: _c(P, "method not allowed"),
    410: _c(I, "the device token is no longer active"),
    413: _c(P, "payload too large"),
    429: _c(R, "too many requests", 5.0),
    500: _c(R, "internal server error", 1.0),
    503: _c(R, "service unavailable", 2.0),
}
SUCCESS = Classification(Outcome.SUCCESS, 0.0, "delivered to APNs")
CONNECTION_ERROR = Classification(R, 0.5, "the connection to APNs failed")


def classify(status_code: int, reason: str | None) -> Classification:
    """What a response means for the notification: by reason first, then by status code."""
    if status_code == 200:
        return SUCCESS
    if reason and reason in REASONS:
        return REASONS[reason]
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code]
    return Classification(R if status_code >= 500 else P, 1.0 if status_code >= 500 else 0.0, f"HTTP {status_code}")
