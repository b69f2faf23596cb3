"""Prometheus metrics of the gateway: every metric name lives here."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noti.queue import CONSUMER_GROUP

REQUESTS = "noti_gateway_requests_total"
REQUEST_SECONDS = "noti_gateway_request_duration_seconds"
QUEUE_DEPTH = "noti_gateway_queue_depth"
NOTIFICATIONS_QUEUED = "noti_gateway_notifications_queued_total"

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Transactional streams are named noti:{<namespace>/<name>}:tx, one per credential (see noti.queue.StreamKeys).
_TX_STREAMS = "noti:{*}:tx"
CAMPAIGN_STREAMS = "noti:{*}:campaign:*"


class Metrics:
    """One registry per app, so several apps in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            REQUESTS, "HTTP requests by route, method and status", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            REQUEST_SECONDS, "HTTP request latency by route", ["route", "method"], buckets=_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            QUEUE_DEPTH,
            "Messages on a transactional stream not yet delivered to a sender (consumer-group lag, else length)",
            ["stream"],
            registry=self.registry,
        )
        self.queued = Counter(NOTIFICATIONS_QUEUED, "Notifications queued by the gateway", registry=self.registry)

    async def refresh_queue_depth(self, redis: aioredis.Redis) -> None:
        """Read each transactional stream's backlog (at scrape time, not per request)."""
        self.queue_depth.clear()
        for stream, depth in (await queue_depths(redis)).items():
            self.queue_depth.labels(stream).set(depth)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


async def queue_depths(redis: aioredis.Redis, pattern: str = _TX_STREAMS) -> dict[str, int]:
    """Messages not yet delivered to a sender, per stream matching ``pattern`` (consumer-group lag, else length)."""
    depths: dict[str, int] = {}
    async for raw in redis.scan_iter(match=pattern, count=500, _type="stream"):
        stream = raw.decode() if isinstance(raw, bytes) else str(raw)
        depth = None
        try:
            for group in await redis.xinfo_groups(stream):
                name = group.get("name")
                name = name.decode() if isinstance(name, bytes) else name
                if name == CONSUMER_GROUP and group.get("lag") is not None:
                    depth = int(group["lag"])
        except aioredis.ResponseError:
            pass
        if depth is None:
            depth = int(await redis.xlen(stream))
        depths[stream] = depth
    return dict(sorted(depths.items()))


def route_label(scope: Scope) -> str:
    """The route's template (bounded cardinality), never the raw path."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return "unmatched"
    return path.rstrip("/") + "/" if path.startswith("/api/") else path


class MetricsMiddleware:
    """Counts and times every HTTP request (a plain ASGI middleware: no per-request task)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._labelled: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            counter, timer = self._children(route_label(scope), scope["method"], status)
            counter.inc()
            timer.observe(time.perf_counter() - started)

    def _children(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        """The labelled counter and histogram of a request, looked up once per label set (a dict hit after)."""
        key = (route, method, status)
        children = self._labelled.get(key)
        if children is None:  # bounded: route templates, methods and statuses are few
            metrics = self.metrics
            children = metrics.requests.labels(route, method, str(status)), metrics.latency.labels(route, method)
            self._labelled[key] = children
        return children
