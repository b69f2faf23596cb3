"""The streak of DeviceTokenNotForTopic answers a sender has met since its last success.

The evidence :func:`noti.sender.policy.decide` weighs before it lets that answer deactivate a device
(one token of another app) or stop the credential (a wrong topic answers every token so).
"""

from __future__ import annotations

from noti.sender.policy import TopicEvidence


class TopicStreak:
    """DeviceTokenNotForTopic answers in a row and their distinct tokens; any success ends the streak."""

    def __init__(self, distinct_needed: int) -> None:
        self._needed = distinct_needed
        self.answers = 0
        self._tokens: set[str] = set()  # never more than needed: a streak of millions stays small
        self.succeeded = False

    def success(self) -> None:
        self.answers = 0
        self._tokens.clear()
        self.succeeded = True

    def not_for_topic(self, device_token: str) -> TopicEvidence:
        """Count one answer and return the evidence for its notification."""
        self.answers += 1
        if len(self._tokens) < self._needed:
            self._tokens.add(device_token)
        return TopicEvidence(self.answers, len(self._tokens), self.succeeded)
