"""ES256 provider tokens: one per credential, shared by every process through Redis.

Apple throttles token churn per team (429 TooManyProviderTokenUpdates), so a token is
minted once, stored with SET NX, reused by all senders of the credential and replaced
between 20 and 60 minutes of age — or once when APNs calls it expired, by whichever
process notices first (a compare-and-set, so N processes seeing the 403 mint once).
Within a process a token is looked up or minted by one coroutine at a time (single
flight): a thousand sends starting together wait for one Redis round trip instead of
each taking a pooled connection for the same answer.

The shared token is keyed by the Apple identity that signs it (team id, key id and the
key's fingerprint, :func:`noti.queue.provider_token`), and a stored token is only used
when its ``kid``, ``iss`` and signature are this key's: after a rotation the first send
of a new sender carries the new identity, not the old one's token until it ages out.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

if TYPE_CHECKING:  # a client without Redis (noti send, the APNs client alone) loads neither it nor noti.queue
    import redis.asyncio as aioredis

REFRESH_AFTER = 50 * 60  # seconds: inside Apple's 20..60 minute window
STORE_TTL = 58 * 60  # the stored token vanishes before Apple would refuse it

# Replace the stored token only if it is still the one the caller saw (or there is none).
_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
  return ARGV[2]
end
return current
"""


class CredentialKeyError(ValueError):
    """The signing key cannot be used; the message never contains key material."""


def load_signing_key(pem: bytes) -> EllipticCurvePrivateKey:
    """Load an Apple .p8 (PKCS#8 PEM, P-256) key."""
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise CredentialKeyError("the APNs signing key is not a PEM-encoded private key (.p8)") from None
    if not isinstance(key, EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise CredentialKeyError("the APNs signing key must be an ES256 (P-256) key")
    return key


def mint(key: EllipticCurvePrivateKey, key_id: str, team_id: str, issued_at: int) -> str:
    """A provider token: ES256 JWT with kid in the header and iss/iat claims."""
    return jwt.encode({"iss": team_id, "iat": issued_at}, key, algorithm="ES256", headers={"kid": key_id})


def public_key_fingerprint(key: EllipticCurvePrivateKey) -> str:
    """SHA-256 (hex) of the key's public half (SubjectPublicKeyInfo, DER): names the key without revealing it."""
    public = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(public).hexdigest()


def signed_by(token: str, key: EllipticCurvePrivateKey, key_id: str, team_id: str) -> bool:
    """Whether ``token`` names ``key_id`` and ``team_id`` and carries ``key``'s signature."""
    try:
        if jwt.get_unverified_header(token).get("kid") != key_id:
            return False
        claims = jwt.decode(
            token, key.public_key(), algorithms=["ES256"], options={"verify_iat": False, "require": ["iss", "iat"]}
        )
    except jwt.PyJWTError:
        return False
    return bool(claims.get("iss") == team_id)


def _issued_at(stored: str) -> int:
    return int(stored.split(":", 1)[0])


def _token(stored: str) -> str:
    return stored.split(":", 1)[1]


class ProviderTokens:
    """The credential's current provider token, cached in-process and shared via Redis.

    Without a Redis client (``noti send`` straight to APNs) the token is only shared
    within this process.
    """

    def __init__(
        self,
        key: EllipticCurvePrivateKey,
        key_id: str,
        team_id: str,
        *,
        redis: aioredis.Redis | None = None,
        redis_key: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key, self.key_id, self.team_id = key, key_id, team_id
        self.fingerprint = public_key_fingerprint(key)
        self._redis = redis
        self._redis_key = redis_key
        self._clock = clock
        self._stored: str | None = None  # "<iat>:<jwt>"
        self._cas = redis.register_script(_COMPARE_AND_SET) if redis is not None else None
        self.minted = 0  # tokens this process minted, for tests and metrics
        self._flight = asyncio.Lock()  # one lookup or mint at a time in this process

    @property
    def redis_key(self) -> str:
        if self._redis_key is None:
            # Here, not at import: noti.queue brings the store's models (SQLAlchemy), ~50k objects that every
            # full garbage collection of a process that never uses Redis would walk.
            from noti.queue import provider_token

            self._redis_key = provider_token(self.team_id, self.key_id, self.fingerprint)
        return self._redis_key

    def _fresh(self, stored: str | None) -> bool:
        return stored is not None and self._clock() - _issued_at(stored) < REFRESH_AFTER

    def _ours(self, stored: str) -> bool:
        """Whether a shared value is "<iat>:<jwt>" of this identity: a token another identity signed
        (an old key id, team or key under this name) is never sent as ours, it is replaced."""
        head, _, token = stored.partition(":")
        return head.isdigit() and signed_by(token, self._key, self.key_id, self.team_id)

    def _mint(self) -> str:
        issued_at = int(self._clock())
        self.minted += 1
        return f"{issued_at}:{mint(self._key, self.key_id, self.team_id, issued_at)}"

    async def current(self) -> str:
        """The token to send now; mints only when no fresh one exists anywhere."""
        if self._fresh(self._stored):
            assert self._stored is not None
            return _token(self._stored)
        async with self._flight:
            if not self._fresh(self._stored):  # unless the coroutine ahead of us found or minted one
                self._stored = await self._lookup()
        assert self._stored is not None
        return _token(self._stored)

    async def _lookup(self) -> str:
        if self._redis is None:
            return self._mint()
        stored = await self._shared()
        if stored is not None and self._ours(stored) and self._fresh(stored):
            return stored
        return await self._replace(stored)

    async def refresh(self, rejected: str) -> str:
        """APNs rejected ``rejected`` as expired: replace it once, however many processes ask."""
        async with self._flight:
            if self._stored is None and self._redis is not None:
                # Not seen here yet: the shared one is either ``rejected`` (the compare-and-set must
                # expect it) or its replacement already.
                self._stored = await self._shared()
            if self._stored is not None and self._ours(self._stored) and _token(self._stored) != rejected:
                return _token(self._stored)  # someone already replaced it
            if self._redis is None:
                self._stored = self._mint()
            else:
                self._stored = await self._replace(self._stored)
            return _token(self._stored)

    async def _shared(self) -> str | None:
        assert self._redis is not None
        raw = await self._redis.get(self.redis_key)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def _replace(self, expected: str | None) -> str:
        assert self._cas is not None
        candidate = self._mint()
        result = await self._cas(keys=[self.redis_key], args=[expected or "", candidate, STORE_TTL])
        winner = result.decode() if isinstance(result, bytes) else str(result)
        if winner != candidate:
            self.minted -= 1  # another process's token won; ours was never used
        return winner
