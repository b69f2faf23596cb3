"""What every request needs (store, Redis, key checks, the send path) and the dependencies that hand it out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from noti.gateway.auth import FailedAuthLimiter, KeyVerifier, Principal, RateLimiter, Scope
from noti.gateway.enqueue import Enqueuer
from noti.gateway.errors import OUTAGES, ApiError, unavailable
from noti.settings import GatewaySettings
from noti.tracing import DISABLED, Tracing


@dataclass(slots=True)
class Gateway:
    settings: GatewaySettings
    engine: Engine
    redis: aioredis.Redis
    verifier: KeyVerifier
    limiter: RateLimiter
    enqueuer: Enqueuer
    failed_auth: FailedAuthLimiter
    tracing: Tracing = DISABLED


def gateway(request: Request) -> Gateway:
    state: Gateway = request.app.state.gateway
    return state


_bearer = HTTPBearer(auto_error=False, description="An API key: `noti apikey create --name X --scopes send,read`")
# One message for a missing, malformed, unknown or revoked key: never tell which.
_UNAUTHORIZED = "missing or invalid API key: send Authorization: Bearer <key>"


async def authenticate(state: Gateway, authorization: str | None, address: str) -> Principal:
    """The live API key of an ``Authorization: Bearer`` header, or the 401 (429 for an address that keeps failing)."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, _UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    key = key.strip()
    principal = state.verifier.cached(key)
    if principal is not None:
        return principal
    wait = state.failed_auth.wait(address)
    if wait:  # this address keeps sending unknown keys: no more lookups for a while
        raise ApiError(429, f"too many failed API key checks from {address}; retry in {wait} s",
                       headers={"Retry-After": str(wait)})  # fmt: skip
    try:
        principal = await run_in_threadpool(state.verifier.verify, key)
    except OUTAGES as exc:  # also called before routing (BodyGuard), where no exception handler answers
        raise unavailable(exc) from None
    if principal is None:
        state.failed_auth.failed(address)
        raise ApiError(401, _UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    return principal


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting requests whose API key is live, has ``scope`` and is within its rate limit."""

    async def check(
        request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        return await admit(request, scope)

    return check


async def admit(request: Request, scope: Scope) -> Principal:
    """The principal of a request whose key is live, has ``scope`` and is within its rate limit (else 401/403/429)."""
    state = gateway(request)
    principal: Principal | None = getattr(request.state, "principal", None)  # checked before the body was read
    if principal is None:
        address = request.client.host if request.client else "unknown"
        principal = await authenticate(state, request.headers.get("authorization"), address)
    if not principal.allows(scope):
        raise ApiError(403, f"this API key lacks the '{scope.value}' scope")
    wait = await state.limiter.acquire(principal.prefix)
    if wait:
        raise ApiError(
            429, f"rate limit of this API key exceeded; retry in {wait} s", headers={"Retry-After": str(wait)}
        )
    request.state.principal = principal
    return principal
