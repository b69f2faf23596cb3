"""An httpx transport speaking HTTP/2 over asyncio with jh2: many streams per connection.

httpx's stock HTTP/2 stack costs about 1.4 ms of CPU a request; APNs traffic is tiny
requests on few long-lived connections, so this transport keeps httpx's API and owns
only the wire: a few connections per credential, each with as many streams in flight as
the server's SETTINGS_MAX_CONCURRENT_STREAMS allows, GOAWAY-aware.

Idle connections are checked with HTTP/2 PING (RFC 9113 §6.7): a connection that has received
nothing for ``ping_interval`` seconds is pinged, and one that does not answer within
``ping_timeout`` is replaced — a NAT or firewall that silently dropped it would otherwise hold
requests until their read timeout. An outbound HTTP CONNECT proxy (``proxy``) may carry the
connections, as many company networks require.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import time
from collections.abc import Iterable
from typing import cast
from urllib.parse import unquote, urlsplit

import httpx
import orjson
from jh2.config import H2Configuration
from jh2.events import (
    ConnectionTerminated,
    DataReceived,
    PingAckReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from jh2.exceptions import NoAvailableStreamIDError, ProtocolError

from noti.apns.h2 import CountingH2Connection, H2Protocol
from noti.apns.reasons import REASONS, Outcome

# Headers HTTP/2 forbids or that the connection itself carries.
_REFUSED_RETRIES = 10
INF = float("inf")
_SKIPPED_HEADERS = frozenset({"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
# HPACK: what repeats on every request of a connection — the provider token (one credential's, on
# connections of their own, as Go's and Netty's clients index it) and the apns-* constants — is indexed
# once and costs a byte or two after that. Values that never repeat (:path names the device, apns-id the
# notification) stay out of the dynamic table: indexed, they would churn its 4,096 bytes and evict the
# ~250-byte token every ~20 requests. proxy-authorization and short cookies stay never-indexed, as jh2 has them.
_NOT_INDEXED = frozenset({"apns-id", "proxy-authorization", "cookie"})


class StreamRefused(httpx.TransportError):
    """The server's GOAWAY said this stream was never processed: safe to send again."""


class GoAway(httpx.RemoteProtocolError):
    """APNs closed the connection giving a reason (JSON in the GOAWAY's debug data) that resending cannot fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"APNs closed the connection: {reason}")
        self.reason = reason


def goaway_reason(debug_data: bytes | None) -> str | None:
    """The ``reason`` of the JSON APNs may put in a GOAWAY frame."""
    try:
        reason = orjson.loads(debug_data or b"").get("reason")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return reason if isinstance(reason, str) else None


class RawResponse:
    """A raw HTTP/2 answer: status, headers without pseudo-headers, body."""

    __slots__ = ("body", "deadline", "future", "headers", "status", "timeout")

    def __init__(self, future: asyncio.Future[RawResponse], deadline: float, timeout: float | None) -> None:
        self.future = future
        self.deadline = deadline  # loop time by which it must be answered (inf: never times out)
        self.timeout = timeout
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()


class H2ClientConnection(H2Protocol):
    """One HTTP/2 connection: requests are multiplexed as streams."""

    def __init__(self, authority: str) -> None:
        self.authority = authority
        self._authority = authority.encode()
        # Request headers come from build_headers (lowercase constants) or through httpx, which
        # validated them; jh2's second pass cost ~10% of a request.
        # jh2's outbound normalization would mark authorization never-indexed on every request (~150
        # bytes each); request() marks what must stay out of the dynamic table itself.
        # Answers are read for :status, apns-id and apns-unique-id only: jh2's inbound validation and
        # normalization (a dozen passes over every header list) and its decoding into HeaderTuples
        # cost ~15% of a request; data_received decodes and checks what it reads.
        config = H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False, normalize_inbound_headers=False,
        )  # fmt: skip
        self.h2 = CountingH2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, RawResponse] = {}
        # Bodies (stream id -> what is left to send) waiting for flow-control window, oldest first: sent as
        # WINDOW_UPDATEs open it, so a request never waits (and wakes) on the window itself.
        self._unsent: dict[int, bytes] = {}
        # One timer per connection, at the earliest deadline of its requests, instead of one per request.
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = INF
        self.max_streams = 1  # until the server's SETTINGS arrive, like Apple's own first answer
        self.closed = False
        self.goaway_reason: str | None = None
        self._settled = asyncio.Event()
        self.on_capacity: asyncio.Event | None = None
        self.last_received = time.monotonic()
        self._pong: asyncio.Event | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._stop_sweep()
        if self.goaway_reason is not None and self.goaway_reason in REASONS:
            self._fail_streams(0, GoAway(self.goaway_reason))
        else:
            self._fail_streams(0, httpx.ReadError(f"connection to APNs lost: {exc or 'closed by peer'}"))
        self._settled.set()

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        try:
            for part in self.h2.split_answers(data):
                if isinstance(part, bytes):
                    self._events(self.h2.receive_data(part))
                    continue
                stream_id, block, end_stream = part
                headers = self.h2.receive_answer(stream_id, block, end_stream)
                response = self.streams.get(stream_id)
                if response is not None:
                    self._answered(stream_id, response, headers)
                if end_stream:
                    self._finish(stream_id)
        except ProtocolError as exc:
            self._close(httpx.RemoteProtocolError(f"HTTP/2 protocol error: {exc}"))
            return
        self._flush()

    def _events(self, events: list[object]) -> None:
        for event in events:
            if isinstance(event, ResponseReceived):
                response = self.streams.get(event.stream_id)
                if response is not None:
                    self._answered(event.stream_id, response, event.headers)
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
                self._send_unsent()  # SETTINGS_INITIAL_WINDOW_SIZE may have opened the streams' windows
            elif isinstance(event, WindowUpdated):
                self._send_unsent()
            elif isinstance(event, PingAckReceived):
                if self._pong is not None:
                    self._pong.set()
            elif isinstance(event, ConnectionTerminated):
                # GOAWAY: streams above last_stream_id were not processed and may be retried elsewhere,
                # unless APNs named a reason resending cannot fix (BadCertificate, InvalidProviderToken...).
                self.closed = True
                self.goaway_reason = goaway_reason(event.additional_data)
                known = REASONS.get(self.goaway_reason or "")
                error: httpx.TransportError = (
                    GoAway(self.goaway_reason)
                    if self.goaway_reason is not None and known is not None and known.outcome is not Outcome.RETRYABLE
                    else StreamRefused(f"APNs closed the connection (GOAWAY {self.goaway_reason or 'without reason'})")
                )
                self._fail_streams(event.last_stream_id or 0, error)
                self._settled.set()

    # internals
    def _answered(self, stream_id: int, response: RawResponse, headers: list[tuple[bytes, bytes]]) -> None:
        """A response's header block: its :status and the rest as text (names are lowercase in HTTP/2)."""
        try:
            for name, value in headers:
                if name == b":status":
                    response.status = int(value)
                elif name[:1] != b":":
                    response.headers.append((name.decode("latin-1"), value.decode("utf-8", "replace")))
        except ValueError:
            response.status = 0
        if not 100 <= response.status <= 999:
            self._fail(stream_id, httpx.RemoteProtocolError("APNs answered without a valid :status"))
            with contextlib.suppress(ProtocolError):
                self.h2.reset_stream(stream_id)

    def _finish(self, stream_id: int) -> None:
        self.h2.forget(stream_id)
        if self._unsent:
            self._unsent.pop(stream_id, None)
        response = self.streams.pop(stream_id, None)
        if response is not None and not response.future.done():
            response.future.set_result(response)
        self._notify_capacity()

    def _fail(self, stream_id: int, error: Exception) -> None:
        self.h2.forget(stream_id)
        self._unsent.pop(stream_id, None)
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
        self._stop_sweep()
        if self.transport is not None:
            self.transport.abort()

    def _stop_sweep(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep, self._sweep_at = None, INF

    async def alive(self, seconds: float) -> bool:
        """Send a PING; whether the server acknowledged it within ``seconds``."""
        if self.closed or self.transport is None:
            return False
        self._pong = asyncio.Event()
        try:
            self.h2.ping(os.urandom(8))
            self._flush()
        except ProtocolError:
            return False
        try:
            await asyncio.wait_for(self._pong.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def abandon(self, why: str) -> None:
        """Drop a connection that stopped answering: its requests fail as never answered, to be sent again."""
        self._close(httpx.ReadError(f"connection to APNs dropped: {why}"))
        self._notify_capacity()

    @property
    def free(self) -> int:
        return 0 if self.closed else self.max_streams - len(self.streams)

    async def settled(self, seconds: float) -> None:
        """Wait for the server's first SETTINGS (its stream limit)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), seconds)

    def start(
        self, path: str, method: str, headers: Iterable[tuple[str, str]], body: bytes, read_timeout: float | None = None
    ) -> RawResponse:
        """Send a request (its body as far as flow control allows, the rest as the window opens); its answer
        comes in the returned response's ``future``, or httpx.ReadTimeout ``read_timeout`` seconds from now."""
        if self.closed or self.transport is None:
            raise StreamRefused("connection is closing")
        try:
            stream_id = self.h2.get_next_available_stream_id()
        except NoAvailableStreamIDError:
            # ~1e9 requests on this connection (6 days at 2,000/s): retire it, the pool opens another.
            self.closed = True
            self._notify_capacity()
            raise StreamRefused("the connection has used every HTTP/2 stream id") from None
        # Values as ASCII, as httpx has them: a header that cannot be encoded raises UnicodeEncodeError here.
        request_headers = [
            (b":method", method.encode(), False), (b":scheme", b"https", False),
            (b":authority", self._authority, False), (b":path", path.encode(), True),
            *[(name.encode(), value.encode("ascii"), name in _NOT_INDEXED) for name, value in headers],
        ]  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = INF if read_timeout is None else loop.time() + read_timeout
        response = RawResponse(loop.create_future(), deadline, read_timeout)
        self.streams[stream_id] = response
        try:
            self.h2.send_request(stream_id, request_headers, end_stream=not body)
        except ProtocolError as exc:
            self.streams.pop(stream_id, None)
            raise httpx.LocalProtocolError(f"cannot send the request: {exc}") from None
        if body:
            h2 = self.h2
            room = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
            if not self._unsent and len(body) <= room:
                h2.send_body(stream_id, body, end_stream=True)  # the usual case: one DATA frame, now
            else:
                self._unsent[stream_id] = body
                if h2.outbound_flow_control_window > 0:
                    self._send_unsent()
        self._flush_soon()
        if deadline < self._sweep_at:
            self._sweep_soon(loop, deadline)
        return response

    async def request(
        self, path: str, method: str, headers: Iterable[tuple[str, str]], body: bytes, read_timeout: float | None = None
    ) -> RawResponse:
        """:meth:`start` and wait for its answer."""
        return await self.start(path, method, headers, body, read_timeout).future

    def _send_unsent(self) -> None:
        """Send waiting bodies, oldest first, as far as the connection's and their streams' windows allow."""
        h2 = self.h2
        for stream_id, body in list(self._unsent.items()):
            if h2.outbound_flow_control_window <= 0:
                return
            try:
                window = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
                while window > 0 and body:
                    chunk, body = body[:window], body[window:]
                    h2.send_body(stream_id, chunk, end_stream=not body)
                    window = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
            except ProtocolError:
                body = b""  # the stream was reset meanwhile: its future already carries the error
            if body:
                self._unsent[stream_id] = body  # its own stream's window is shut: the others may go on
            else:
                del self._unsent[stream_id]

    def _sweep_soon(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep_at = when
        self._sweep = loop.call_at(when, self._time_out)

    def _time_out(self) -> None:
        """Fail every request past its deadline with ReadTimeout (its stream reset); wake again at the next."""
        self._sweep, self._sweep_at = None, INF
        loop = asyncio.get_running_loop()
        now, earliest = loop.time() + 0.001, INF  # timers may fire a rounding error early
        late: list[int] = []
        for stream_id, response in self.streams.items():
            if response.deadline <= now:
                late.append(stream_id)
            elif response.deadline < earliest:
                earliest = response.deadline
        for stream_id in late:
            response = self.streams.pop(stream_id)
            self._unsent.pop(stream_id, None)
            with contextlib.suppress(Exception):
                self.h2.reset_stream(stream_id)
                self.h2.forget(stream_id)
            if not response.future.done():
                response.future.set_exception(httpx.ReadTimeout(f"APNs did not answer within {response.timeout} s"))
        if late:
            self._flush_soon()
            self._notify_capacity()
        if earliest < INF and not self.closed:
            self._sweep_soon(loop, earliest)

    def close(self) -> None:
        """Say GOAWAY (unless the server did) and close the socket, also when already closed to new streams."""
        if self.transport is not None:
            self.closed = True
            with contextlib.suppress(Exception):
                self.h2.close_connection()
                self._flush()
            self.transport.close()


class H2Transport(httpx.AsyncBaseTransport):
    """A pool of up to ``connections`` HTTP/2 connections to one origin."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        connections: int = 2,
        connect_timeout: float = 10.0,
        ping_interval: float = 60.0,
        ping_timeout: float = 10.0,
        proxy: str | None = None,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self._proxy = parse_proxy(proxy) if proxy else None
        self._ping_interval, self._ping_timeout = ping_interval, ping_timeout
        self._keepalive: asyncio.Task[None] | None = None
        self._ssl = ssl_context
        self._limit = connections
        self._connect_timeout = connect_timeout
        self._connections: list[H2ClientConnection] = []
        self._connecting = 0
        self._capacity = asyncio.Event()
        self._failed_connects = 0  # so requests waiting on a failed connect fail with it at once
        self._connect_error: httpx.ConnectError | None = None
        self.connects = 0  # connections opened so far (reconnects included)

    async def _open(self, host: str, port: int) -> H2ClientConnection:
        loop = asyncio.get_running_loop()
        authority = host if port == 443 else f"{host}:{port}"
        # Counted as connecting until it is in the pool (SETTINGS included), so tasks woken
        # meanwhile do not open connections beyond the limit.
        self._connecting += 1
        try:
            try:
                connecting = self._connect(loop, authority, host, port)
                _, connection = await asyncio.wait_for(connecting, self._connect_timeout)
            except (OSError, TimeoutError) as exc:
                via = f" through the proxy {self._proxy.host}:{self._proxy.port}" if self._proxy else ""
                raise httpx.ConnectError(f"cannot connect to APNs at {host}:{port}{via}: {exc}") from None
            transport = connection.transport
            ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                connection.close()
                raise httpx.ConnectError(f"{host}:{port} does not speak HTTP/2 (ALPN h2)")
            connection.on_capacity = self._capacity
            try:
                await connection.settled(self._connect_timeout)
            except BaseException:  # cancelled while waiting for SETTINGS: do not leak the socket
                connection.close()
                raise
            self.connects += 1
            self._connections.append(connection)
            if self._keepalive is None or self._keepalive.done():
                self._keepalive = asyncio.create_task(self._keep_alive(), name="apns-keepalive")
        except httpx.ConnectError as exc:
            self._failed_connects += 1
            self._connect_error = exc
            raise
        finally:
            self._connecting -= 1
            self._capacity.set()  # waiters look again: at the new connection, or open one if this failed
        return connection

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, authority: str, host: str, port: int
    ) -> tuple[asyncio.BaseTransport, H2ClientConnection]:
        """TLS to ``host:port``, straight or through the CONNECT proxy's tunnel."""
        if self._proxy is None:
            return await loop.create_connection(lambda: H2ClientConnection(authority), host, port, ssl=self._ssl)
        reader, writer = await asyncio.open_connection(self._proxy.host, self._proxy.port)
        try:
            writer.write(self._proxy.connect_request(host, port))
            await writer.drain()
            status_line = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            parts = status_line.split()
            if len(parts) < 2 or parts[1] != b"200":
                answer = status_line.decode(errors="replace").strip() or "no answer"
                raise OSError(f"the proxy refused CONNECT {host}:{port}: {answer}")
            sock = writer.get_extra_info("socket")
            # The tunnel's socket leaves the stream that asked for it: TLS and HTTP/2 run on it from here.
            raw = sock.dup()
        finally:
            writer.transport.abort()
        return await loop.create_connection(
            lambda: H2ClientConnection(authority), sock=raw, ssl=self._ssl, server_hostname=host
        )

    async def _keep_alive(self) -> None:
        """PING connections that have been quiet for ``ping_interval``; replace those that do not answer."""
        while self._connections:
            await asyncio.sleep(min(self._ping_interval, self._ping_timeout) / 2)
            now = time.monotonic()
            quiet = [c for c in self._connections if not c.closed and now - c.last_received >= self._ping_interval]
            answers = await asyncio.gather(*(c.alive(self._ping_timeout) for c in quiet))
            for connection, alive in zip(quiet, answers, strict=True):
                if not alive and not connection.closed:
                    connection.abandon(f"no answer to PING within {self._ping_timeout} s")
            if quiet:
                self._capacity.set()

    def _ready(self) -> H2ClientConnection | None:
        """The open connection with the most room, when it is the one to use now: it is busy already, or no
        other may be opened. None when a connection must be opened, retired or waited for (:meth:`_acquire`)."""
        best: H2ClientConnection | None = None
        most = opened = 0
        for connection in self._connections:
            if connection.closed:
                if not connection.streams:
                    return None  # to be retired
                continue
            opened += 1
            free = connection.max_streams - len(connection.streams)
            if free > most:
                best, most = connection, free
        if best is not None and (best.streams or opened + self._connecting >= self._limit):
            return best
        return None

    async def _acquire(self, host: str, port: int) -> H2ClientConnection:
        while True:
            retired = [c for c in self._connections if c.closed and not c.streams]
            if retired:
                for connection in retired:
                    connection.close()  # after GOAWAY or out of stream ids: its socket goes too
                self._connections = [c for c in self._connections if c not in retired]
            ready = self._ready()
            if ready is not None:
                return ready
            open_connections = [c for c in self._connections if not c.closed]
            best = max(open_connections, key=lambda c: c.free, default=None)
            if len(open_connections) + self._connecting < self._limit:
                return await self._open(host, port)
            if best is not None and best.free > 0:
                return best
            failures = self._failed_connects
            self._capacity.clear()
            await self._capacity.wait()
            # A connect failed meanwhile and nothing has room: fail now with its error rather than
            # each waiter trying (and timing out) in turn.
            failed = self._failed_connects != failures and self._connect_error is not None
            if failed and not any(c.free > 0 for c in self._connections):
                raise httpx.ConnectError(str(self._connect_error))

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
        response = await self.exchange(host, port, request.method, path, headers, body, read_timeout)
        return httpx.Response(response.status, headers=response.headers, content=bytes(response.body), request=request)

    async def exchange(
        self, host: str, port: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes,
        read_timeout: float | None = None,
    ) -> RawResponse:  # fmt: skip
        """One request without building httpx Request and Response objects: the APNs client's hot path.

        ``headers`` are lowercase and HTTP/2-legal (no connection headers, no pseudo-headers).
        Raises httpx.TransportError subclasses like ``handle_async_request``.
        """
        for attempt in range(_REFUSED_RETRIES):
            connection = self._ready() or await self._acquire(host, port)
            try:
                return await connection.start(path, method, headers, body, read_timeout).future
            except StreamRefused:
                # Never processed by the server (GOAWAY or reset): sending it again cannot duplicate it.
                if attempt == _REFUSED_RETRIES - 1:
                    raise
        raise StreamRefused(f"stream refused {_REFUSED_RETRIES} times")  # pragma: no cover - the loop returns or raises

    async def aclose(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        for connection in self._connections:
            connection.close()
        self._connections.clear()


class Proxy:
    """An HTTP CONNECT proxy (``http://[user:password@]host:port``) that tunnels the TLS connections to APNs."""

    def __init__(self, host: str, port: int, credentials: str | None = None) -> None:
        self.host, self.port, self._credentials = host, port, credentials

    def connect_request(self, host: str, port: int) -> bytes:
        lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
        if self._credentials:
            lines.append(f"Proxy-Authorization: Basic {base64.b64encode(self._credentials.encode()).decode()}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_proxy(url: str) -> Proxy:
    """``http://[user:password@]host[:port]`` (NOTI_APNS_PROXY); raises ValueError saying what is wrong."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("the APNs proxy must be an http://host:port URL of an HTTP CONNECT proxy")
    try:
        port = parts.port or 8080
    except ValueError:
        raise ValueError("the APNs proxy's port is not a number") from None
    credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}" if parts.username else None
    return Proxy(parts.hostname, port, credentials)
