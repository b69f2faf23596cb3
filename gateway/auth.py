"""API keys: creation, hashed storage, lookup by prefix, scopes, and the per-key rate limit.

A key reads ``noti_<prefix>_<secret>``. Only the prefix (to find the row) and the SHA-256 of
the whole key are stored; keys are 256-bit random, so a fast hash is enough and a slow one
would only cost latency. A verified key is trusted for ``gateway_key_cache_seconds``, which
is how long a revocation takes to reach a running gateway.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.orm import Session

from noti.queue import api_key_rate_limit
from noti.ratelimit import TokenBucket
from noti.store.models import ApiKey, utcnow

KEY_PREFIX = "noti"


class Scope(enum.StrEnum):
    SEND = "send"  # send notifications, register/update/delete devices
    READ = "read"  # read devices, notifications and stats
    ADMIN = "admin"  # everything, and the admin UI

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> list[Scope]:
        """Scopes from ``send,read`` (or a list); raises ValueError naming an unknown one."""
        names = text.split(",") if isinstance(text, str) else list(text)
        scopes: list[Scope] = []
        for name in (n.strip().lower() for n in names):
            if not name:
                continue
            try:
                scope = cls(name)
            except ValueError:
                raise ValueError(f"unknown scope {name!r}: choose from {', '.join(s.value for s in cls)}") from None
            if scope not in scopes:
                scopes.append(scope)
        if not scopes:
            raise ValueError(f"give at least one scope: {', '.join(s.value for s in cls)}")
        return scopes


@dataclass(frozen=True, slots=True)
class Principal:
    """The API key a request was made with (never its secret)."""

    id: int
    name: str
    prefix: str
    scopes: frozenset[str]

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN.value in self.scopes or scope.value in self.scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def split_key(key: str) -> str | None:
    """The lookup prefix of a well-formed key, or None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


def create_api_key(engine: Engine, name: str, scopes: Sequence[Scope]) -> str:
    """Store a new key and return it: the only time the full key is ever seen."""
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    with engine.begin() as connection:
        connection.execute(
            insert(ApiKey).values(name=name, prefix=prefix, key_hash=hash_key(key), scopes=[s.value for s in scopes])
        )
    return key


def revoke_api_key(engine: Engine, name_or_prefix: str) -> int:
    """Revoke the live keys with this name or prefix; returns how many."""
    with engine.begin() as connection:
        result = connection.execute(
            update(ApiKey)
            .where((ApiKey.prefix == name_or_prefix) | (ApiKey.name == name_or_prefix), ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return int(result.rowcount)


def list_api_keys(engine: Engine) -> list[ApiKey]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


# Compared against when the prefix is unknown, so a miss costs what a hit costs.
_DUMMY_HASH = hash_key("noti_000000000000_dummy")


def _load(connection: Connection, prefix: str, key: str) -> Principal | None:
    row = connection.execute(
        select(ApiKey.id, ApiKey.name, ApiKey.key_hash, ApiKey.scopes, ApiKey.revoked_at).where(ApiKey.prefix == prefix)
    ).one_or_none()
    expected = row.key_hash if row is not None else _DUMMY_HASH
    if not hmac.compare_digest(expected, hash_key(key)) or row is None or row.revoked_at is not None:
        return None
    connection.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=utcnow()))
    return Principal(row.id, row.name, prefix, frozenset(row.scopes or ()))


class KeyVerifier:
    """Verifies bearer keys against the store, remembering good ones for a few seconds."""

    def __init__(self, engine: Engine, cache_seconds: float) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        # key hash -> (principal, expiry); hashed so no secret sits in memory longer than a request
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._by_id: dict[int, tuple[Principal | None, float]] = {}  # key id -> (live key or None, expiry)

    def cached(self, key: str) -> Principal | None:
        hit = self._cache.get(hash_key(key))
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def verify(self, key: str) -> Principal | None:
        """The key's principal, or None for anything not a live key (blocking: run in a thread)."""
        prefix = split_key(key)
        if prefix is None:
            return None
        with self.engine.begin() as connection:
            principal = _load(connection, prefix, key)
        if principal is not None and self.cache_seconds > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[hash_key(key)] = (principal, time.monotonic() + self.cache_seconds)
        return principal

    def by_id(self, key_id: int) -> Principal | None:
        """The live key with this id, or None once it is revoked (cached like ``verify``; blocking)."""
        hit = self._by_id.get(key_id)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        with self.engine.connect() as connection:
            columns = select(ApiKey.name, ApiKey.prefix, ApiKey.scopes)
            row = connection.execute(columns.where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))).one_or_none()
        principal = Principal(key_id, row.name, row.prefix, frozenset(row.scopes or ())) if row is not None else None
        if self.cache_seconds > 0:
            if len(self._by_id) > 10_000:
                self._by_id.clear()
            self._by_id[key_id] = (principal, time.monotonic() + self.cache_seconds)
        return principal


class _Lease:
    """Tokens a process took from one key's shared bucket and spends locally until ``expiry``."""

    __slots__ = ("bucket", "expiry", "left", "refilling")

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self.left = 0
        self.expiry = 0.0
        self.refilling = asyncio.Lock()  # one Redis call at a time per key, however many requests wait

    def spend(self, cost: int) -> bool:
        if self.left >= cost and time.monotonic() < self.expiry:
            self.left -= cost
            return True
        return False


class RateLimiter:
    """A token bucket per API key in Redis, shared by every gateway replica.

    A process takes tokens from the shared bucket in leases of 1/20 of a second's allowance
    and spends them locally for up to a second, so a busy key costs one Redis call per lease
    rather than one per request; a lease taken and not spent is simply lost. Requests that
    find the lease spent wait for one refill instead of each asking Redis.
    """

    def __init__(self, redis: aioredis.Redis, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.lease = max(1, min(burst, int(rate // 20)))
        self._redis = redis
        self._leases: dict[str, _Lease] = {}  # one per key prefix (as many as there are API keys)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    async def acquire(self, prefix: str, cost: int = 1) -> int:
        """0 when the request may go ahead, else the whole seconds to wait (Retry-After)."""
        if not self.enabled:
            return 0
        lease = self._leases.get(prefix)
        if lease is None:
            bucket = TokenBucket(self._redis, api_key_rate_limit(prefix), self.rate, self.burst)
            lease = self._leases[prefix] = _Lease(bucket)
        if lease.spend(cost):
            return 0
        async with lease.refilling:
            if lease.spend(cost):  # refilled while this request waited
                return 0
            wait = 0.0
            for take in dict.fromkeys((max(cost, self.lease), cost)):
                grant = await lease.bucket.take(take, partial=False)
                if grant.granted:
                    lease.left, lease.expiry = take - cost, time.monotonic() + 1.0
                    return 0
                wait = grant.wait
            return max(1, math.ceil(wait))


class FailedAuthLimiter:
    """Failed API key checks per client address: a token bucket each, in this process.

    Every unknown key costs a database lookup; an address that keeps sending them is refused
    (429) without one until its bucket refills. Keys already verified are never held up.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)

    def _tokens(self, address: str, now: float) -> float:
        tokens, when = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - when) * self.rate)

    def wait(self, address: str) -> int:
        """0 when ``address`` may have a key checked, else the whole seconds until it may (Retry-After)."""
        if self.rate <= 0:
            return 0
        tokens = self._tokens(address, self._clock())
        return 0 if tokens >= 1 else max(1, math.ceil((1 - tokens) / self.rate))

    def failed(self, address: str) -> None:
        """One more failed check from ``address``."""
        if self.rate <= 0:
            return
        now = self._clock()
        if len(self._buckets) > 100_000:  # a flood of addresses: forget the ones that have refilled
            self._buckets = {a: b for a, b in self._buckets.items() if self._tokens(a, now) < self.burst}
        self._buckets[address] = (self._tokens(address, now) - 1, now)
