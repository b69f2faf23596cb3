"""The gateway application: ``create_app(settings)`` wires the store, Redis, routes, docs, admin and metrics."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from sqlalchemy import Engine

from noti import __version__
from noti.gateway import (
    admin,
    channels,
    devices,
    docs,
    errors,
    health,
    live_activities,
    notifications,
    plain_send,
    tokens,
)
from noti.gateway.auth import FailedAuthLimiter, KeyVerifier, RateLimiter
from noti.gateway.bodies import BodyGuard
from noti.gateway.context import Gateway, authenticate
from noti.gateway.enqueue import Enqueuer
from noti.gateway.metrics import Metrics, MetricsMiddleware
from noti.logs import collapse_repeats
from noti.settings import GatewaySettings, get_settings
from noti.store.db import Bounds, make_engine
from noti.tracing import GATEWAY, Tracing
from noti.tracing import setup as setup_tracing

_PING_AFTER_IDLE = 2.0  # seconds

DESCRIPTION = """\
Register devices and send iOS push notifications through Noti.

Every `/api/` route needs `Authorization: Bearer <API key>` (`noti apikey create`).
Paths work with and without the trailing slash. Errors are `{"detail": ..., "errors": [...]}`.
"""


def create_app(
    settings: GatewaySettings, *, engine: Engine | None = None, redis: aioredis.Redis | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:  # fmt: skip
    """The gateway; ``engine``, ``redis`` and ``tracing`` may be handed in (then the caller closes them)."""
    owns_tracing = tracing is None
    tracing = tracing or setup_tracing(settings, GATEWAY)
    owns_engine, owns_redis = engine is None, redis is None
    # One pool for every route; the send path checks a connection out per batch, so a liveness
    # ping per checkout would be a round trip per batch: ping only connections that sat idle.
    engine = engine or make_engine(
        settings.database_url, pool_size=settings.database_pool_size, ping_after_idle=_PING_AFTER_IDLE,
        bounds=Bounds.of(settings),
    )  # fmt: skip
    redis = redis or aioredis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    verifier = KeyVerifier(engine, settings.gateway_key_cache_seconds)
    metrics = Metrics()
    enqueuer = Enqueuer(
        engine,
        redis,
        batching=settings.gateway_batching,
        batch_max=settings.gateway_batch_max,
        on_queued=metrics.queued.inc,
    )
    state = Gateway(
        settings=settings,
        engine=engine,
        redis=redis,
        verifier=verifier,
        limiter=RateLimiter(redis, settings.gateway_rate_limit, settings.gateway_rate_burst),
        enqueuer=enqueuer,
        failed_auth=FailedAuthLimiter(settings.gateway_auth_failure_rate, settings.gateway_auth_failure_burst),
        tracing=tracing,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # What is loaded by now lives as long as the process: keep the collector off it, so its
        # full passes (the long pauses in a latency tail) stay short.
        gc.collect()
        gc.freeze()
        await enqueuer.start()
        try:
            yield
        finally:
            await enqueuer.stop()
            if owns_redis:
                await redis.aclose()
            if owns_engine:
                engine.dispose()
            if owns_tracing:
                tracing.shutdown()

    app = FastAPI(
        title="Noti gateway",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry spans follow Noti's tracing setting: off, they cost no check per request.
        telemetry=None if tracing.enabled else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.gateway = state
    app.state.metrics = metrics
    errors.install(app)
    app.include_router(notifications.router)  # first: routes are matched in order, sends are the hot path
    app.include_router(devices.router)
    app.include_router(tokens.router)
    app.include_router(live_activities.router)
    app.include_router(channels.router)
    app.include_router(health.router)
    plain_send.install(app.router.routes)  # in front of the send route: its well-formed requests, served fast
    docs.install(app)
    admin.install(app, state)
    app.add_middleware(
        BodyGuard, authenticate=partial(authenticate, state), max_bytes=settings.gateway_max_body_bytes,
        read_seconds=settings.gateway_body_seconds,
    )  # fmt: skip
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = docs.add_models(errors.openapi_error_schema(schema), devices.BODY_MODELS)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory of ``noti gateway``: settings from ``NOTI_*``."""
    collapse_repeats()  # in each worker process, on uvicorn's handlers as configured by now
    return create_app(get_settings().gateway)
