"""The sender's probe and metrics endpoints: /healthz, /readyz and /metrics, HTTP/1.1 by h11 over asyncio.

/healthz is for a liveness probe (the process works), /readyz for a readiness probe (it can
deliver: its credential is accepted and Redis answers). Both answer the sender's status as
JSON, 200 when it holds and 503 when not; /metrics is Prometheus text.

Three GET routes need no web framework: aiohttp alone was ~10 MB of every sender's resident
memory (issue #17: a sender's peak RSS ≤ 100 MB); h11 (httpx's HTTP/1.1 parser) is a few hundred KB.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import h11
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

JSON = "application/json"
MAX_REQUEST = 16_384  # bytes of request line and headers: probes and scrapers send a few hundred
Answer = tuple[int, str, bytes]  # status, content type, body


def answer(
    method: str, target: str, registry: CollectorRegistry, status: Callable[[], dict[str, object]]
) -> Answer:  # fmt: skip
    """What a request for ``target`` gets: the probes' JSON, the metrics, or a JSON 404."""
    path = target.split("?", 1)[0].rstrip("/") or "/"
    if method in ("GET", "HEAD"):
        if path in ("/healthz", "/readyz"):
            state = status()
            held = state.get("live" if path == "/healthz" else "ready")
            return (200 if held else 503), JSON, orjson.dumps(state)
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
    return 404, JSON, b'{"error":"not found"}'


class HealthServer:
    def __init__(self, registry: CollectorRegistry, status: Callable[[], dict[str, object]]) -> None:
        self._registry, self._status = registry, status
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); the port it listens on."""
        self._server = await asyncio.start_server(self._serve, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One keep-alive connection: answer its requests in turn until either side closes."""
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(reader.read(65_536), 60)
                    connection.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    code, content_type, body = answer(
                        event.method.decode(), event.target.decode(), self._registry, self._status
                    )
                    headers = [("content-type", content_type), ("content-length", str(len(body)))]
                    writer.write(connection.send(h11.Response(status_code=code, headers=headers)))
                    if event.method != b"HEAD":
                        writer.write(connection.send(h11.Data(data=body)))
                    writer.write(connection.send(h11.EndOfMessage()))
                    await writer.drain()
                elif isinstance(event, h11.ConnectionClosed) or connection.our_state is h11.MUST_CLOSE:
                    return
                elif connection.our_state is h11.DONE and connection.their_state is h11.DONE:
                    connection.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            with contextlib.suppress(h11.LocalProtocolError, OSError):
                writer.write(connection.send(h11.Response(status_code=exc.error_status_hint, headers=[])))
                writer.write(connection.send(h11.EndOfMessage()))
        except (OSError, TimeoutError):
            pass  # the client went away, or sat idle: its connection ends here
        finally:
            writer.close()
