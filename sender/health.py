"""A tiny HTTP server for /healthz, /readyz and /metrics (no framework: a sender has nothing else to serve).

/healthz is for a liveness probe (the process works), /readyz for a readiness probe (it can
deliver: its credential is accepted and Redis answers).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthServer:
    def __init__(self, registry: CollectorRegistry, status: Callable[[], dict[str, object]]) -> None:
        self._registry = registry
        self._status = status
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ValueError, asyncio.IncompleteReadError):
            request = await reader.readline()
            while await reader.readline() not in (b"\r\n", b"\n", b""):
                pass
            path = request.split()[1].decode() if len(request.split()) > 1 else "/"
            if path == "/metrics":
                status, content_type, body = 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
            elif path.rstrip("/") in ("/healthz", "/readyz"):
                state = self._status()
                status = 200 if state.get("live" if path.startswith("/healthz") else "ready") else 503
                content_type, body = "application/json", orjson.dumps(state)
            else:
                status, content_type, body = 404, "application/json", b'{"error": "not found"}'
            writer.write(
                f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\ncontent-type: {content_type}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
