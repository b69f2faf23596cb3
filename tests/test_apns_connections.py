"""Connections to APNs: idle ones are PINGed and replaced when they stop answering; an HTTP CONNECT proxy
carries them (real TLS HTTP/2: a small server of this test that can go silent, and the APNs simulator)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from jh2.config import H2Configuration
from jh2.connection import H2Connection
from jh2.events import ConnectionTerminated, RequestReceived

from harness.apns import SimulatorProcess
from noti.apns.client import APNsClient, client_ssl_context
from noti.apns.payload import NotificationContent
from noti.apns.reasons import Outcome
from noti.apns.simulator import generate_certificate, server_ssl_context
from noti.apns.tokens import ProviderTokens, load_signing_key
from noti.apns.transport import H2Transport, parse_proxy

TOKEN = "ab" * 32
APNS_ID = "0f3c9d4e-8a1b-4c2d-9e7f-5a6b7c8d9e0f"
HELLO = NotificationContent(title="hello")


class _Answering(asyncio.Protocol):
    """One connection of the test server: answers every request 200 with its apns-id (and PINGs, as jh2
    does) until the server goes silent — then it reads and drops everything, like a dead NAT mapping."""

    def __init__(self, server: SilentableServer) -> None:
        self.server = server
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.silent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.append(self)
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.silent:
            return
        for event in self.h2.receive_data(data):
            if isinstance(event, RequestReceived):
                headers = dict(event.headers)
                apns_id = headers.get("apns-id", str(uuid.uuid4()))
                self.h2.send_headers(event.stream_id, [(":status", "200"), ("apns-id", apns_id)], end_stream=True)
            elif isinstance(event, ConnectionTerminated):
                assert self.transport is not None
                self.transport.close()
        assert self.transport is not None
        self.transport.write(self.h2.data_to_send())


@dataclass
class SilentableServer:
    port: int = 0
    connections: list[_Answering] = field(default_factory=list)

    def go_silent(self) -> None:
        for connection in self.connections:
            connection.silent = True


@pytest.fixture
async def h2_server(tmp_path: Path) -> AsyncIterator[tuple[SilentableServer, Path]]:
    cert, key = generate_certificate(tmp_path, ("127.0.0.1", "localhost"))
    context = server_ssl_context(cert, key)
    state = SilentableServer()
    server = await asyncio.get_running_loop().create_server(lambda: _Answering(state), "127.0.0.1", 0, ssl=context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state, cert
    finally:
        server.close()
        for connection in state.connections:
            if connection.transport is not None:
                connection.transport.abort()


async def test_a_connection_that_stops_answering_pings_is_replaced_and_sends_succeed(
    h2_server: tuple[SilentableServer, Path],
) -> None:
    server, ca = h2_server
    transport = H2Transport(client_ssl_context(ca_file=ca), connections=1, ping_interval=0.3, ping_timeout=0.3)
    client = APNsClient("com.example.app", endpoint=f"https://127.0.0.1:{server.port}", transport=transport)
    try:
        assert (await client.send(TOKEN, HELLO)).ok
        server.go_silent()  # the first connection now swallows everything, PINGs included
        await asyncio.sleep(1.5)  # idle for longer than ping interval + timeout
        results = await asyncio.wait_for(asyncio.gather(*(client.send(TOKEN, HELLO) for _ in range(5))), 5)
    finally:
        await client.aclose()
    assert [result.ok for result in results] == [True] * 5
    assert transport.connects == 2 and len(server.connections) == 2  # replaced once, not per request


async def test_a_busy_connection_that_answers_pings_is_kept(h2_server: tuple[SilentableServer, Path]) -> None:
    server, ca = h2_server
    transport = H2Transport(client_ssl_context(ca_file=ca), connections=1, ping_interval=0.2, ping_timeout=0.5)
    client = APNsClient("com.example.app", endpoint=f"https://127.0.0.1:{server.port}", transport=transport)
    try:
        for _ in range(6):
            assert (await client.send(TOKEN, HELLO)).ok
            await asyncio.sleep(0.3)  # idle long enough to be pinged between sends
    finally:
        await client.aclose()
    assert transport.connects == 1


async def test_a_notification_apns_does_not_answer_in_time_fails_retryable_and_frees_its_stream(
    h2_server: tuple[SilentableServer, Path],
) -> None:
    server, ca = h2_server
    transport = H2Transport(client_ssl_context(ca_file=ca), connections=1)
    client = APNsClient(
        "com.example.app", endpoint=f"https://127.0.0.1:{server.port}", transport=transport, timeout=0.3
    )
    try:
        assert (await client.send(TOKEN, HELLO)).ok
        server.go_silent()
        started = time.perf_counter()
        late = await asyncio.wait_for(client.send(TOKEN, HELLO), 5)
        elapsed = time.perf_counter() - started
        connection = transport._connections[0]
    finally:
        await client.aclose()
    assert (late.status_code, late.reason, late.outcome) == (0, "ReadTimeout", Outcome.RETRYABLE)
    assert 0.25 < elapsed < 2
    assert not connection.streams  # its stream was given back, not left counting against the limit


async def test_httpx_async_client_over_the_h2_transport_sends_as_is(apns_simulator: SimulatorProcess) -> None:
    """The stock httpx API over our transport (what the client's direct path skips) still works end to end."""
    key = load_signing_key(apns_simulator.private_key_pem)
    authorization = f"bearer {await ProviderTokens(key, apns_simulator.key_id, apns_simulator.team_id).current()}"
    transport = H2Transport(client_ssl_context(ca_file=apns_simulator.ca_path), connections=1)
    async with httpx.AsyncClient(base_url=apns_simulator.url, transport=transport) as http:
        response = await http.post(
            f"/3/device/{TOKEN}", content=b'{"aps":{"alert":"hi"}}',
            headers={"authorization": authorization, "apns-topic": apns_simulator.bundle_id, "apns-id": APNS_ID},
        )  # fmt: skip
        refused = await http.post(f"/3/device/{TOKEN}", content=b"{}", headers={"apns-topic": apns_simulator.bundle_id})
    assert (response.status_code, response.headers["apns-id"]) == (200, APNS_ID)
    assert (refused.status_code, refused.json()["reason"]) == (403, "MissingProviderToken")


async def test_a_header_block_larger_than_a_frame_goes_out_in_continuation_frames(
    apns_simulator: SimulatorProcess,
) -> None:
    key = load_signing_key(apns_simulator.private_key_pem)
    authorization = f"bearer {await ProviderTokens(key, apns_simulator.key_id, apns_simulator.team_id).current()}"
    transport = H2Transport(client_ssl_context(ca_file=apns_simulator.ca_path), connections=1)
    async with httpx.AsyncClient(base_url=apns_simulator.url, transport=transport) as http:
        headers = {"authorization": authorization, "apns-topic": apns_simulator.bundle_id}
        # Random, so HPACK's Huffman coding cannot shrink it under the 16,384-byte frame limit.
        big = await http.post(
            f"/3/device/{TOKEN}",
            content=b'{"aps":{"alert":"hi"}}',
            headers={**headers, "x-trace": os.urandom(20_000).hex()},
        )
        after = await http.post(f"/3/device/{TOKEN}", content=b'{"aps":{"alert":"hi"}}', headers=headers)
    assert (big.status_code, after.status_code) == (200, 200)
    assert transport.connects == 1  # the server read the split block: no protocol error closed the connection


@dataclass
class ConnectProxy:
    """A loopback HTTP CONNECT proxy that records what it was asked to tunnel."""

    port: int = 0
    tunnels: list[str] = field(default_factory=list)
    refuse: bool = False
    sent_up: int = 0  # bytes the client sent through the tunnels (TLS records)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readline()
        headers = []
        while (line := await reader.readline()) not in (b"\r\n", b""):
            headers.append(line)
        method, target, _ = request.decode().split()
        if method != "CONNECT" or self.refuse:
            writer.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        self.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    if source is reader:
                        self.sent_up += len(data)
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


@pytest.fixture
async def proxy() -> AsyncIterator[ConnectProxy]:
    state = ConnectProxy()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()


def _client(simulator: SimulatorProcess, proxy: str) -> APNsClient:
    key = load_signing_key(simulator.private_key_pem)
    return APNsClient(
        simulator.bundle_id, endpoint=simulator.url, tokens=ProviderTokens(key, simulator.key_id, simulator.team_id),
        ssl_context=client_ssl_context(ca_file=simulator.ca_path), connections=1, proxy=proxy,
    )  # fmt: skip


async def test_notifications_reach_apns_through_an_http_connect_proxy(
    apns_simulator: SimulatorProcess, proxy: ConnectProxy
) -> None:
    client = _client(apns_simulator, f"http://127.0.0.1:{proxy.port}")
    try:
        results = await asyncio.gather(*(client.send(f"{i:064x}", HELLO) for i in range(20)))
    finally:
        await client.aclose()
    assert [result.ok for result in results] == [True] * 20
    assert proxy.tunnels == [apns_simulator.url.removeprefix("https://")]  # one tunnel, TLS inside it
    assert apns_simulator.counters()["by_outcome"] == {"Success": 20}


async def test_the_provider_token_crosses_the_wire_once_per_connection_not_per_notification(
    apns_simulator: SimulatorProcess, proxy: ConnectProxy
) -> None:
    client = _client(apns_simulator, f"http://127.0.0.1:{proxy.port}")
    try:
        assert (await client.send(TOKEN, HELLO)).ok  # the connection, its TLS handshake and the token's first trip
        assert client.tokens is not None
        token = await client.tokens.current()
        before = proxy.sent_up
        for i in range(20):
            assert (await client.send(f"{i:064x}", HELLO)).ok
        per_notification = (proxy.sent_up - before) / 20
    finally:
        await client.aclose()
    # HPACK-indexed on its connection, the token is one byte of each request's header block after the first:
    # a whole request (headers, payload, TLS framing) then weighs less than the token alone.
    assert per_notification < len(f"bearer {token}")


async def test_a_proxy_that_refuses_the_tunnel_is_a_connection_error_naming_the_proxy(
    apns_simulator: SimulatorProcess, proxy: ConnectProxy
) -> None:
    proxy.refuse = True
    client = _client(apns_simulator, f"http://127.0.0.1:{proxy.port}")
    try:
        result = await client.send(TOKEN, HELLO)
    finally:
        await client.aclose()
    assert (result.status_code, result.reason) == (0, "ConnectError")
    assert apns_simulator.counters()["total"] == 0


@pytest.mark.parametrize("url", ["https://proxy:3128", "http://", "http://proxy:port"])
def test_a_proxy_url_that_is_not_http_host_port_is_refused_with_the_reason(url: str) -> None:
    with pytest.raises(ValueError, match="proxy"):
        parse_proxy(url)


def test_proxy_credentials_go_in_a_basic_proxy_authorization_header() -> None:
    request = parse_proxy("http://alice:s%40cret@proxy.corp:3128").connect_request("api.push.apple.com", 443)
    assert request.startswith(b"CONNECT api.push.apple.com:443 HTTP/1.1\r\n")
    assert b"Proxy-Authorization: Basic YWxpY2U6c0BjcmV0\r\n" in request
