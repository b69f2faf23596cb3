"""One simulator process's state: faults injected on purpose, what APNs knows, and what it counted."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from itertools import islice
from typing import Any

from noti.apns.simulator.channels import Channels
from noti.apns.simulator.rules import Answer, Device, Directory, Keyring, RegisteredKey


@dataclass
class Faults:
    """What the simulator does wrong on purpose."""

    latency_ms: float = 0.0  # added to every response
    latency_jitter_ms: float = 0.0  # plus a uniform 0..jitter
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    goaway_after: int = 0  # GOAWAY a connection after this many streams (0: never)
    goaway_reason: str = "Shutdown"  # the JSON reason in that GOAWAY's debug data, as Apple sends it
    drop_rate: float = 0.0  # chance a request kills its connection without answering
    unregistered: list[str] = field(default_factory=list)  # tokens answered 410 Unregistered
    bad_tokens: list[str] = field(default_factory=list)  # tokens answered 400 BadDeviceToken
    expired_tokens: list[str] = field(default_factory=list)  # tokens answered 410 ExpiredToken
    # A team's new provider token within this many seconds of its previous one gets 429
    # TooManyProviderTokenUpdates (Apple: refresh no more often than every 20 minutes). 0: any.
    token_update_min_seconds: float = 0.0

    def update(self, changes: dict[str, Any]) -> Faults:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def injected(self, roll: float) -> Answer | None:
        """The error a request gets by chance (``roll`` uniform in [0, 1)), or None."""
        for rate, status, reason in (
            (self.rate_429, 429, "TooManyRequests"),
            (self.rate_500, 500, "InternalServerError"),
            (self.rate_503, 503, "ServiceUnavailable"),
        ):
            if roll < rate:
                return Answer(status, reason)
            roll -= rate
        return None


def parse_devices(devices: dict[str, Any]) -> dict[str, Device]:
    """Registry entries from JSON: ``{token: [topic, ...]}``, or ``{token: {"topics": [...], "unregistered_at": ms}}``
    for a token APNs stopped delivering to at that time (410 Unregistered with that timestamp), or with
    ``"expired_at": ms`` for one that expired then (410 ExpiredToken: an outdated push-to-start token)."""
    parsed = {}
    for token, entry in devices.items():
        if isinstance(entry, list):
            entry = {"topics": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("topics"), list):
            raise ValueError(
                f"device {token}: give its topics as a list, or {{'topics': [...], 'unregistered_at': ms}}"
            )
        unknown = set(entry) - {"topics", "unregistered_at", "expired_at"}
        if unknown:
            raise ValueError(f"device {token}: unknown fields {', '.join(sorted(unknown))}")
        if "unregistered_at" in entry and "expired_at" in entry:
            raise ValueError(f"device {token}: give unregistered_at or expired_at, not both")
        reason = "ExpiredToken" if "expired_at" in entry else "Unregistered"
        at = entry.get("expired_at", entry.get("unregistered_at"))
        if at is not None and (not isinstance(at, int) or isinstance(at, bool)):
            raise ValueError(f"device {token}: unregistered_at and expired_at are milliseconds since the epoch")
        parsed[token.lower()] = Device(frozenset(str(topic) for topic in entry["topics"]), at, reason)
    return parsed


# Device tokens counted one by one (by_token). A long-running simulator (noti dev's) sees ever new
# tokens: past this many, the earliest counted half is forgotten, so its counters stay bounded.
MAX_COUNTED_TOKENS = 100_000


class State:
    """Keys, devices, faults and counters of one simulator process."""

    def __init__(
        self, faults: Faults | None = None, keys: list[RegisteredKey] | None = None,
        max_counted_tokens: int = MAX_COUNTED_TOKENS,
    ) -> None:  # fmt: skip
        if max_counted_tokens < 1:
            raise ValueError(f"max_counted_tokens is at least 1, not {max_counted_tokens}")
        self.faults = faults or Faults()
        self.directory = Directory(Keyring(keys or ()))
        self.by_outcome: Counter[str] = Counter()
        self.by_token: Counter[str] = Counter()
        # Accepted Live Activity pushes by event and priority ("update/10"): 10s draw on the device's budget.
        self.live_activities: Counter[str] = Counter()
        self.max_counted_tokens = max_counted_tokens
        self.tokens_forgotten = 0  # tokens dropped from by_token to keep it within max_counted_tokens
        self.provider_tokens: set[str] = set()
        self.resets = 0  # how many times the counters were cleared
        self.team_tokens: dict[str, tuple[str, float]] = {}  # team → (its provider token, since when)
        self.channels = Channels()  # broadcast channels (noti.apns.simulator.channels)
        self._apply_faults()

    def _apply_faults(self) -> None:
        directory = self.directory
        directory.unregistered = frozenset(t.lower() for t in self.faults.unregistered)
        directory.bad_tokens = frozenset(t.lower() for t in self.faults.bad_tokens)
        directory.expired = frozenset(t.lower() for t in self.faults.expired_tokens)

    def set_faults(self, changes: dict[str, Any]) -> None:
        self.faults = self.faults.update(changes)
        self._apply_faults()

    def register(self, key: RegisteredKey) -> None:
        self.directory.keys.register(key)

    def add_devices(self, devices: dict[str, Any]) -> int:
        """Add devices to the registry (turning it on); how many it holds."""
        parsed = parse_devices(devices)
        if self.directory.devices is None:
            self.directory.devices = {}
        self.directory.devices.update(parsed)
        return len(self.directory.devices)

    def clear_devices(self) -> None:
        """Turn the registry off: every well-formed token exists again, for every topic."""
        self.directory.devices = None

    def count_token(self, token: str) -> None:
        """Count a request to the device ``token``, forgetting the earliest counted half when too many are held."""
        by_token = self.by_token
        if token not in by_token and len(by_token) >= self.max_counted_tokens:
            keep = self.max_counted_tokens // 2
            self.tokens_forgotten += len(by_token) - keep
            # A new Counter rather than deletions: a dict never shrinks its table, a copy is sized to what it holds.
            kept: Counter[str] = Counter()
            dict.update(kept, islice(by_token.items(), len(by_token) - keep, None))
            self.by_token = by_token = kept
        by_token[token] += 1

    def token_update_refused(self, team_id: str, token: str, now: float) -> bool:
        """Whether ``token`` is a provider token update Apple would throttle (and if not, the team's token now)."""
        current = self.team_tokens.get(team_id)
        if current is not None and current[0] != token and now - current[1] < self.faults.token_update_min_seconds:
            return True
        if current is None or current[0] != token:
            self.team_tokens[team_id] = (token, now)
        return False

    def reset(self) -> None:
        self.resets += 1
        self.team_tokens.clear()
        self.by_outcome.clear()
        self.by_token = Counter()  # not clear(): a cleared dict keeps its table
        self.tokens_forgotten = 0
        self.live_activities.clear()
        self.provider_tokens.clear()
        self.channels.reset()

    def counters(self) -> dict[str, Any]:
        return {
            "total": sum(self.by_outcome.values()),
            "by_outcome": dict(self.by_outcome),
            "by_token": dict(self.by_token),
            "live_activities": dict(self.live_activities),
            "tokens_forgotten": self.tokens_forgotten,
            "provider_tokens": len(self.provider_tokens),
            # Fingerprints, not tokens: workers' sets merge into one count of distinct tokens.
            "provider_token_ids": sorted(hashlib.sha256(t.encode()).hexdigest()[:16] for t in self.provider_tokens),
            "channels": self.channels.counters(),
        }
