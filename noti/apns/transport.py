"""An httpx transport speaking HTTP/2 over asyncio with jh2: many streams per connection.

httpx's stock HTTP/2 stack costs about 1.4 ms of CPU a request; APNs traffic is tiny
requests on few long-lived connections, so this transport keeps httpx's API and owns
only the wire: a few connections per credential, each with as many streams in flight as
the server's SETTINGS_MAX_CONCURRENT_STREAMS allows, GOAWAY-aware.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable
from typing import cast

import httpx
from jh2.config import H2Configuration
from jh2.connection import H2Connection
from jh2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from jh2.exceptions import ProtocolError

# Headers HTTP/2 forbids or that the connection itself carries.
_REFUSED_RETRIES = 10
_SKIPPED_HEADERS = frozenset({"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})


class StreamRefused(httpx.TransportError):
    """The server's GOAWAY said this stream was never processed: safe to send again."""


class _Response:
    __slots__ = ("body", "future", "headers", "status")

    def __init__(self, future: asyncio.Future[_Response]) -> None:
        self.future = future
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()


class H2ClientConnection(asyncio.Protocol):
    """One HTTP/2 connection: requests are multiplexed as streams."""

    def __init__(self, authority: str) -> None:
        self.authority = authority
        self.h2 = H2Connection(config=H2Configuration(client_side=True, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Response] = {}
        self.max_streams = 1  # until the server's SETTINGS arrive, like Apple's own first answer
        self.closed = False
        self._window = asyncio.Event()
        self._settled = asyncio.Event()
        self.on_capacity: asyncio.Event | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._fail_streams(0, httpx.ReadError(f"connection to APNs lost: {exc or 'closed by peer'}"))
        self._settled.set()
        self._window.set()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            self._close(httpx.RemoteProtocolError(f"HTTP/2 protocol error: {exc}"))
            return
        for event in events:
            if isinstance(event, ResponseReceived):
                response = self.streams.get(event.stream_id)
                if response is not None:
                    headers = [(str(k), str(v)) for k, v in event.headers]
                    response.status = int(next(v for k, v in headers if k == ":status"))
                    response.headers = [(k, v) for k, v in headers if not k.startswith(":")]
            elif isinstance(event, DataReceived):
                response = self.streams.get(event.stream_id)
                if response is not None:
                    response.body += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                self._finish(event.stream_id)
            elif isinstance(event, StreamReset):
                self._fail(event.stream_id, StreamRefused(f"stream reset by APNs (error {event.error_code})"))
            elif isinstance(event, RemoteSettingsChanged):
                self.max_streams = max(1, self.h2.remote_settings.max_concurrent_streams)
                self._settled.set()
                self._notify_capacity()
            elif isinstance(event, WindowUpdated):
                self._window.set()
            elif isinstance(event, ConnectionTerminated):
                # GOAWAY: streams above last_stream_id were not processed and may be retried elsewhere.
                self.closed = True
                self._fail_streams(event.last_stream_id or 0, StreamRefused("APNs closed the connection (GOAWAY)"))
                self._settled.set()
        self._flush()

    # internals
    def _flush(self) -> None:
        if self.transport is not None:
            data = self.h2.data_to_send()
            if data:
                self.transport.write(data)

    def _finish(self, stream_id: int) -> None:
        response = self.streams.pop(stream_id, None)
        if response is not None and not response.future.done():
            response.future.set_result(response)
        self._notify_capacity()

    def _fail(self, stream_id: int, error: Exception) -> None:
        response = self.streams.pop(stream_id, None)
        if response is not None and not response.future.done():
            response.future.set_exception(error)
        self._notify_capacity()

    def _fail_streams(self, above: int, error: Exception) -> None:
        """Fail every stream with an id above ``above``."""
        for stream_id in [sid for sid in self.streams if sid > above]:
            self._fail(stream_id, error)

    def _notify_capacity(self) -> None:
        if self.on_capacity is not None:
            self.on_capacity.set()

    def _close(self, error: Exception) -> None:
        self.closed = True
        self._fail_streams(0, error)
        if self.transport is not None:
            self.transport.abort()

    @property
    def free(self) -> int:
        return 0 if self.closed else self.max_streams - len(self.streams)

    async def settled(self, seconds: float) -> None:
        """Wait for the server's first SETTINGS (its stream limit)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), seconds)

    async def request(
        self, path: str, method: str, headers: Iterable[tuple[str, str]], body: bytes, read_timeout: float | None = None
    ) -> _Response:
        if self.closed or self.transport is None:
            raise StreamRefused("connection is closing")
        stream_id = self.h2.get_next_available_stream_id()
        response = _Response(asyncio.get_running_loop().create_future())
        self.streams[stream_id] = response
        request_headers = [(":method", method), (":scheme", "https"), (":authority", self.authority), (":path", path)]
        request_headers.extend(headers)
        self.h2.send_headers(stream_id, request_headers, end_stream=not body)
        offset = 0
        while offset < len(body):
            window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if window <= 0:
                self._flush()
                self._window.clear()
                await self._window.wait()
                if self.closed:
                    break
                continue
            chunk = body[offset : offset + window]
            offset += len(chunk)
            self.h2.send_data(stream_id, chunk, end_stream=offset >= len(body))
        self._flush()
        try:
            return await asyncio.wait_for(response.future, read_timeout)
        except TimeoutError:
            self.streams.pop(stream_id, None)
            with contextlib.suppress(Exception):
                self.h2.reset_stream(stream_id)
                self._flush()
            self._notify_capacity()
            raise httpx.ReadTimeout(f"APNs did not answer within {read_timeout} s") from None

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.h2.close_connection()
                self._flush()
            self.transport.close()


class H2Transport(httpx.AsyncBaseTransport):
    """A pool of up to ``connections`` HTTP/2 connections to one origin."""

    def __init__(self, ssl_context: ssl.SSLContext, *, connections: int = 2, connect_timeout: float = 10.0) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self._ssl = ssl_context
        self._limit = connections
        self._connect_timeout = connect_timeout
        self._connections: list[H2ClientConnection] = []
        self._connecting = 0
        self._capacity = asyncio.Event()
        self.connects = 0  # connections opened so far (reconnects included)

    async def _open(self, host: str, port: int) -> H2ClientConnection:
        loop = asyncio.get_running_loop()
        authority = host if port == 443 else f"{host}:{port}"
        self._connecting += 1
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: H2ClientConnection(authority), host, port, ssl=self._ssl),
                self._connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise httpx.ConnectError(f"cannot connect to APNs at {host}:{port}: {exc}") from None
        finally:
            self._connecting -= 1
        transport = connection.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            connection.close()
            raise httpx.ConnectError(f"{host}:{port} does not speak HTTP/2 (ALPN h2)")
        connection.on_capacity = self._capacity
        await connection.settled(self._connect_timeout)
        self.connects += 1
        self._connections.append(connection)
        return connection

    async def _acquire(self, host: str, port: int) -> H2ClientConnection:
        while True:
            self._connections = [c for c in self._connections if not (c.closed and not c.streams)]
            open_connections = [c for c in self._connections if not c.closed]
            best = max(open_connections, key=lambda c: c.free, default=None)
            if (
                best is not None
                and best.free > 0
                and (best.streams or len(open_connections) + self._connecting >= self._limit)
            ):
                return best
            if len(open_connections) + self._connecting < self._limit:
                return await self._open(host, port)
            if best is not None and best.free > 0:
                return best
            self._capacity.clear()
            await self._capacity.wait()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host, port = url.host, url.port or 443
        path = url.raw_path.decode()
        body = request.content if isinstance(request.stream, httpx.ByteStream) else await request.aread()
        headers = [
            (name.decode().lower(), value.decode())
            for name, value in request.headers.raw
            if name.decode().lower() not in _SKIPPED_HEADERS
        ]
        read_timeout = request.extensions.get("timeout", {}).get("read")
        for attempt in range(_REFUSED_RETRIES):
            connection = await self._acquire(host, port)
            try:
                response = await connection.request(path, request.method, headers, body, read_timeout)
            except StreamRefused:
                # Never processed by the server (GOAWAY or reset): sending it again cannot duplicate it.
                if attempt == _REFUSED_RETRIES - 1:
                    raise
                continue
            return httpx.Response(
                response.status, headers=response.headers, content=bytes(response.body), request=request
            )
        raise StreamRefused(f"stream refused {_REFUSED_RETRIES} times")  # pragma: no cover - the loop returns or raises

    async def aclose(self) -> None:
        for connection in self._connections:
            connection.close()
        self._connections.clear()
