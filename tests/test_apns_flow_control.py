"""The HTTP/2 transport's flow control and deadlines against a small TLS HTTP/2 server of this test that
opens its receive window only when told to, resets streams on demand, or stops answering."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from jh2.config import H2Configuration
from jh2.connection import H2Connection
from jh2.errors import ErrorCodes
from jh2.events import DataReceived, RequestReceived, StreamEnded, StreamReset

from noti.apns.client import client_ssl_context
from noti.apns.simulator import generate_certificate, server_ssl_context
from noti.apns.transport import H2Transport

WINDOW = 65_535  # HTTP/2's initial connection window, which only the server's WINDOW_UPDATEs widen


class _Server(asyncio.Protocol):
    """Answers each request once its body has arrived: 200 with the body's SHA-256 in ``x-sha256``."""

    def __init__(self, state: WindowServer) -> None:
        self.state = state
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.bodies: dict[int, bytearray] = {}
        self.unacknowledged: list[tuple[int, int]] = []  # (bytes, stream id) not yet given back as window

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections.append(self)
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, RequestReceived):
                self.state.requests += 1
                if self.state.reset_next:
                    self.state.reset_next -= 1
                    self.state.resets += 1
                    self.h2.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
                else:
                    self.bodies[event.stream_id] = bytearray()
                    if self.state.resets:
                        self.state.resent.set()
            elif isinstance(event, DataReceived):
                self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                self.unacknowledged.append((event.flow_controlled_length, event.stream_id))
            elif isinstance(event, StreamEnded) and not self.state.silent:
                body = bytes(self.bodies.pop(event.stream_id, b""))
                self.state.received.append(body)
                answer = [(":status", "200"), ("x-sha256", hashlib.sha256(body).hexdigest())]
                self.h2.send_headers(event.stream_id, answer, end_stream=True)
            elif isinstance(event, StreamReset):
                self.state.resets_received += 1
        if self.state.window_open:
            self.give_back()
        self._write()

    def give_back(self) -> None:
        for length, stream_id in self.unacknowledged:
            self.h2.acknowledge_received_data(length, stream_id)
        self.unacknowledged.clear()
        self._write()

    def _write(self) -> None:
        if self.transport is not None:
            self.transport.write(self.h2.data_to_send())


@dataclass
class WindowServer:
    port: int = 0
    window_open: bool = True  # give received bytes back as window at once
    silent: bool = False  # read everything, answer nothing
    reset_next: int = 0  # refuse this many of the next requests with RST_STREAM
    requests: int = 0
    resets: int = 0
    resets_received: int = 0  # RST_STREAMs the client sent
    resent: asyncio.Event = field(default_factory=asyncio.Event)  # a request came after a reset one
    received: list[bytes] = field(default_factory=list)
    connections: list[_Server] = field(default_factory=list)

    def open_window(self) -> None:
        self.window_open = True
        for connection in self.connections:
            connection.give_back()


@pytest.fixture
async def window_server(tmp_path: Path) -> AsyncIterator[tuple[WindowServer, H2Transport]]:
    cert, key = generate_certificate(tmp_path, ("127.0.0.1", "localhost"))
    context = server_ssl_context(cert, key)
    state = WindowServer()
    server = await asyncio.get_running_loop().create_server(lambda: _Server(state), "127.0.0.1", 0, ssl=context)
    state.port = server.sockets[0].getsockname()[1]
    transport = H2Transport(client_ssl_context(ca_file=cert), connections=1)
    try:
        yield state, transport
    finally:
        await transport.aclose()
        server.close()
        for connection in state.connections:
            if connection.transport is not None:
                connection.transport.abort()


async def _post(
    server: WindowServer, transport: H2Transport, body: bytes, read_timeout: float | None = 5.0
) -> dict[str, str]:
    answer = await transport.exchange("127.0.0.1", server.port, "POST", "/3/device/ab", [], body, read_timeout)
    assert answer.status == 200
    return dict(answer.headers)


async def test_bodies_beyond_the_connection_window_go_out_as_it_opens_each_arriving_whole(
    window_server: tuple[WindowServer, H2Transport],
) -> None:
    server, transport = window_server
    bodies = [bytes([i]) * 3000 for i in range(100)]  # 300 KB in flight over a 64 KB window
    answers = await asyncio.wait_for(asyncio.gather(*(_post(server, transport, body) for body in bodies)), 20)
    assert [answer["x-sha256"] for answer in answers] == [hashlib.sha256(body).hexdigest() for body in bodies]
    assert sorted(server.received) == sorted(bodies)
    assert transport.connects == 1


async def test_a_body_larger_than_a_frame_and_the_window_arrives_whole(
    window_server: tuple[WindowServer, H2Transport],
) -> None:
    server, transport = window_server
    body = bytes(range(256)) * 1000  # 256 KB: many 16 KB frames, several windows
    answer = await asyncio.wait_for(_post(server, transport, body), 20)
    assert answer["x-sha256"] == hashlib.sha256(body).hexdigest()


async def test_a_request_stuck_behind_a_shut_window_times_out_at_its_deadline_and_later_ones_get_through(
    window_server: tuple[WindowServer, H2Transport],
) -> None:
    server, transport = window_server
    server.window_open = False
    first = b"x" * (WINDOW - 100)
    await _post(server, transport, first)  # takes nearly all the window, which the server keeps shut
    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        await _post(server, transport, b"y" * 1000, read_timeout=0.3)
    elapsed = time.perf_counter() - started
    assert 0.25 < elapsed < 2
    server.open_window()
    assert (await _post(server, transport, b"z" * 1000))["x-sha256"] == hashlib.sha256(b"z" * 1000).hexdigest()
    assert server.received == [first, b"z" * 1000]  # nothing of the timed-out body was sent after its reset
    assert transport.connects == 1


async def test_a_stream_refused_while_its_body_waits_for_the_window_is_sent_again_whole(
    window_server: tuple[WindowServer, H2Transport],
) -> None:
    server, transport = window_server
    server.window_open = False
    await _post(server, transport, b"x" * (WINDOW - 100))
    server.reset_next = 1
    body = b"w" * 5000
    waiting = asyncio.ensure_future(_post(server, transport, body))
    await asyncio.wait_for(server.resent.wait(), 5)  # its second stream, whose body waits for the window
    server.open_window()
    assert (await asyncio.wait_for(waiting, 5))["x-sha256"] == hashlib.sha256(body).hexdigest()
    assert server.resets == 1 and server.requests == 3 and server.received[-1] == body
    assert transport.connects == 1  # no DATA went out on the refused stream: no protocol error


async def test_each_request_unanswered_fails_at_its_own_deadline(
    window_server: tuple[WindowServer, H2Transport],
) -> None:
    server, transport = window_server
    await _post(server, transport, b"warm")
    server.silent = True
    started = time.perf_counter()

    async def late(seconds: float) -> float:
        with pytest.raises(httpx.ReadTimeout):
            await _post(server, transport, b"x", read_timeout=seconds)
        return time.perf_counter() - started

    # Started longest first: the connection's one timer must move earlier for each shorter deadline.
    elapsed = await asyncio.wait_for(asyncio.gather(late(1.2), late(0.7), late(0.2)), 10)
    for timeout, seconds in zip((1.2, 0.7, 0.2), elapsed, strict=True):
        assert timeout - 0.05 < seconds < timeout + 0.4
    assert not transport._connections[0].streams  # every stream given back


async def test_answered_requests_are_never_reset_when_their_deadline_passes(
    window_server: tuple[WindowServer, H2Transport],
) -> None:
    server, transport = window_server
    for _ in range(5):
        await _post(server, transport, b"x", read_timeout=0.2)
    await asyncio.sleep(0.5)
    after = await _post(server, transport, b"after", read_timeout=0.2)
    assert after["x-sha256"] == hashlib.sha256(b"after").hexdigest()
    assert server.resets_received == 0
