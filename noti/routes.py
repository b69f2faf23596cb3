"""Routes: which credential serves an app (bundle id) in an APNs environment.

The operator claims a route when it reconciles an APNsCredential and releases it when the
credential goes; ``noti dev`` claims its embedded credential's. The gateway sends each
notification to the one credential holding its route, and refuses a send no credential
serves. A route is held by one credential: a second credential claiming the same app and
environment is a conflict, unless it is the same Apple identity in the same namespace (then
it may serve its own campaigns, but the gateway's traffic keeps going to the holder).

A route is stored in the ``noti:routes`` hash as ``<namespace>/<name> <Apple identity>``,
the Apple identity being ``<team id>.<key id>`` (token auth) or ``certificate:<fingerprint>``,
never key material.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis

from noti.bundle_id import bundle_id_problem
from noti.queue import ENVIRONMENTS, ROUTES, Environment, credential_problem


def route_field(app: str, environment: str) -> str:
    """The ``noti:routes`` field of ``app`` in ``environment``; ValueError for no bundle id or environment."""
    if environment not in ENVIRONMENTS:
        raise ValueError(f"environment must be one of {', '.join(ENVIRONMENTS)}, not {environment!r}")
    problem = bundle_id_problem(app)
    if problem is not None:
        raise ValueError(f"app {app!r}: {problem}")
    return f"{environment}:{app}"


def apple_identity(team_id: str, key_id: str, certificate_fingerprint: str | None = None) -> str:
    """Who signs to Apple: ``<team id>.<key id>``, or ``certificate:<fingerprint>`` for certificate auth."""
    if certificate_fingerprint is not None:
        return f"certificate:{certificate_fingerprint}"
    return f"{team_id}.{key_id}"


@dataclass(frozen=True, slots=True)
class Route:
    """The credential serving one app in one environment, and the Apple identity it signs with."""

    credential: str  # <namespace>/<name>
    apple: str

    def __post_init__(self) -> None:
        problem = credential_problem(self.credential)
        if problem is not None:
            raise ValueError(problem)
        if not self.apple or " " in self.apple:
            raise ValueError(f"an Apple identity is one word such as TEAMID.KEYID, not {self.apple!r}")

    @property
    def namespace(self) -> str:
        return self.credential.split("/")[0]

    def encode(self) -> str:
        return f"{self.credential} {self.apple}"

    @classmethod
    def decode(cls, value: bytes | str) -> Route:
        text = value.decode() if isinstance(value, bytes) else value
        credential, _, apple = text.partition(" ")
        return cls(credential, apple)


class Claimed(enum.Enum):
    """What claiming a route did."""

    TAKEN = "taken"  # it was free: the claimer serves it now
    HELD = "held"  # the claimer held it already (refreshed)
    SHARED = "shared"  # held by another credential of the same Apple identity in the same namespace
    CONFLICT = "conflict"  # held by another credential: the claimer must not serve it


# KEYS[1] the routes hash; ARGV[1] the field, ARGV[2] the claimer's credential, ARGV[3] its encoded route,
# ARGV[4] the credential's namespace, ARGV[5] its Apple identity. Answers {what happened, the holder's route}.
CLAIM_ROUTE = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if not held then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return {'taken', ARGV[3]}
end
local holder, apple = string.match(held, '^(%S+) (%S+)$')
if holder == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return {'held', ARGV[3]}
end
if holder and apple == ARGV[5] and string.sub(holder, 1, #ARGV[4] + 1) == ARGV[4] .. '/' then
  return {'shared', held}
end
return {'conflict', held}
"""

# KEYS[1] the routes hash; ARGV[1] the field, ARGV[2] the credential letting go. Only the holder releases.
RELEASE_ROUTE = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and string.match(held, '^(%S+) ') == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: Claimed
    holder: Route  # the route as it stands after the claim

    @property
    def serves(self) -> bool:
        """Whether the claimer may serve the app (its own campaigns at least)."""
        return self.outcome is not Claimed.CONFLICT


async def claim(redis: aioredis.Redis, app: str, environment: str, route: Route) -> Claim:
    """Claim the route of ``app`` in ``environment`` for ``route``'s credential (atomic)."""
    answer = await redis.eval(
        CLAIM_ROUTE, 1, ROUTES, route_field(app, environment), route.credential, route.encode(), route.namespace,
        route.apple,
    )  # fmt: skip
    outcome, holder = answer
    return Claim(Claimed(outcome.decode() if isinstance(outcome, bytes) else outcome), Route.decode(holder))


async def release(redis: aioredis.Redis, app: str, environment: str, credential: str) -> bool:
    """Let go of the route of ``app`` in ``environment`` if ``credential`` still holds it."""
    released = await redis.eval(RELEASE_ROUTE, 1, ROUTES, route_field(app, environment), credential)
    return bool(released)


def parse_routes(values: Mapping[bytes, bytes]) -> dict[str, Route]:
    """The ``noti:routes`` hash as field → route (a value that is no route is left out)."""
    routes = {}
    for field, value in values.items():
        try:
            routes[field.decode()] = Route.decode(value)
        except ValueError:
            continue
    return routes


def unserved(app: str, environment: Environment) -> str:
    """What the gateway answers for a send nobody serves."""
    return (
        f"no credential serves app {app} in environment {environment}: create an APNsCredential for it "
        "(or check bundleId and environment of the one you have)"
    )


class RouteTable:
    """The routes as the gateway reads them: the whole hash, read again once it is ``ttl`` seconds old.

    A credential created or deleted is seen within ``ttl`` seconds; the send path costs no Redis
    round trip in between.
    """

    def __init__(self, redis: aioredis.Redis, ttl: float = 3.0) -> None:
        self.redis = redis
        self.ttl = ttl
        self._routes: dict[str, Route] = {}
        self._read_at = float("-inf")

    async def current(self) -> Mapping[str, Route]:
        """The routes, read from Redis when the copy in hand is older than the ttl."""
        if time.monotonic() - self._read_at >= self.ttl:
            values: dict[bytes, bytes] = await self.redis.hgetall(ROUTES)  # type: ignore[assignment]
            self._routes = parse_routes(values)
            self._read_at = time.monotonic()
        return self._routes

    def forget(self) -> None:
        """Read the routes again at the next send."""
        self._read_at = float("-inf")
