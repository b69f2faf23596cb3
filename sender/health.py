"""The sender's probe and metrics endpoints: /healthz, /readyz and /metrics, served by aiohttp.

/healthz is for a liveness probe (the process works), /readyz for a readiness probe (it can
deliver: its credential is accepted and Redis answers). Both answer the sender's status as
JSON, 200 when it holds and 503 when not; /metrics is Prometheus text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def health_app(registry: CollectorRegistry, status: Callable[[], dict[str, object]]) -> web.Application:
    """The endpoints over the sender's metrics ``registry`` and its ``status()`` (``live``, ``ready``, ...)."""

    def probe(flag: str) -> Handler:
        async def handle(_: web.Request) -> web.Response:
            state = status()
            return web.Response(
                body=orjson.dumps(state), status=200 if state.get(flag) else 503, content_type="application/json"
            )

        return handle

    async def metrics(_: web.Request) -> web.Response:
        # CONTENT_TYPE_LATEST carries its own charset and version, which content_type= would refuse.
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @web.middleware
    async def json_not_found(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return web.json_response({"error": "not found"}, status=404)

    app = web.Application(middlewares=[json_not_found])
    for path, handler in (("/healthz", probe("live")), ("/readyz", probe("ready")), ("/metrics", metrics)):
        app.router.add_get(path, handler)
        app.router.add_get(path + "/", handler)
    return app


class HealthServer:
    def __init__(self, registry: CollectorRegistry, status: Callable[[], dict[str, object]]) -> None:
        self._runner = web.AppRunner(health_app(registry, status), access_log=None)
        self._started = False

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); the port it listens on."""
        await self._runner.setup()
        self._started = True
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        return int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._started:
            await self._runner.cleanup()
            self._started = False
