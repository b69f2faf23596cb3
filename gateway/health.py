"""``/healthz`` (the process answers), ``/readyz`` (the store and Redis answer) and ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from noti.gateway.context import gateway
from noti.gateway.routing import SlashRouter
from noti.gateway.schemas import Health

router = SlashRouter(tags=["operations"])
CHECK_TIMEOUT = 2.0


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database or Redis is unreachable"}},
    summary="Readiness: the database and Redis answer",
)
async def readyz(request: Request) -> Response:
    state = gateway(request)

    def ping_database() -> None:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    checks: dict[str, str] = {}
    for name, check in (("database", lambda: run_in_threadpool(ping_database)), ("redis", state.redis.ping)):
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; say which, not the URL
            checks[name] = f"unreachable ({type(exc).__name__})"
    ready = all(value == "ok" for value in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    metrics = request.app.state.metrics
    with contextlib.suppress(Exception):  # request metrics stay useful while Redis is away
        await asyncio.wait_for(metrics.refresh_queue_depth(gateway(request).redis), CHECK_TIMEOUT)
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
