"""The HTTP/2 transport under trouble: unreachable APNs, exhausted stream ids (real TLS, the simulator)."""

from __future__ import annotations

import asyncio
import socket
import time

from harness.apns import SimulatorProcess
from noti.apns.client import APNsClient, client_ssl_context
from noti.apns.payload import NotificationContent
from noti.apns.reasons import Outcome
from noti.apns.simulator.control import merge_counters
from noti.apns.tokens import ProviderTokens, load_signing_key
from noti.apns.transport import H2Transport

TOKEN = "ab" * 32


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_requests_waiting_for_a_connection_fail_fast_when_apns_is_unreachable() -> None:
    client = APNsClient(
        "com.example.app", endpoint=f"https://127.0.0.1:{_closed_port()}", ssl_context=client_ssl_context(),
        connections=1,
    )  # fmt: skip
    results = await asyncio.wait_for(
        asyncio.gather(*(client.send(f"{i:064x}", NotificationContent(title="x")) for i in range(50))), 10
    )
    await client.aclose()
    assert {(r.status_code, r.reason, r.outcome) for r in results} == {(0, "ConnectError", Outcome.RETRYABLE)}


async def test_a_connect_timeout_fails_the_waiting_requests_at_once_not_one_timeout_each() -> None:
    with socket.socket() as silent:  # accepts TCP, never answers the TLS handshake
        silent.bind(("127.0.0.1", 0))
        silent.listen(100)
        transport = H2Transport(client_ssl_context(), connections=1, connect_timeout=0.5)
        client = APNsClient(
            "com.example.app", endpoint=f"https://127.0.0.1:{silent.getsockname()[1]}", transport=transport
        )
        started = time.perf_counter()
        results = await asyncio.gather(*(client.send(f"{i:064x}", NotificationContent(title="x")) for i in range(40)))
        elapsed = time.perf_counter() - started
        await client.aclose()
    assert {(r.status_code, r.reason) for r in results} == {(0, "ConnectError")}
    assert elapsed < 3  # one 0.5 s timeout for all 40, not 40 in turn


async def test_a_connection_that_ran_out_of_stream_ids_is_replaced(apns_simulator: SimulatorProcess) -> None:
    key = load_signing_key(apns_simulator.private_key_pem)
    tokens = ProviderTokens(key, apns_simulator.key_id, apns_simulator.team_id)
    client = APNsClient(
        apns_simulator.bundle_id, endpoint=apns_simulator.url, tokens=tokens,
        ssl_context=client_ssl_context(ca_file=apns_simulator.ca_path), connections=1,
    )  # fmt: skip
    assert (await client.send(TOKEN, NotificationContent(title="x"))).ok
    worn = client.transport._connections[0]  # type: ignore[attr-defined]
    worn.h2.highest_outbound_stream_id = 2**31 - 1  # as after a billion requests
    assert (await client.send(TOKEN, NotificationContent(title="x"))).ok
    assert client.transport.connects == 2  # type: ignore[attr-defined]
    await asyncio.sleep(0.1)
    assert worn.transport is None  # the worn connection's socket was closed, not leaked
    await client.aclose()


async def test_a_long_lived_connection_keeps_nothing_of_the_requests_it_finished(
    apns_simulator: SimulatorProcess,
) -> None:
    key = load_signing_key(apns_simulator.private_key_pem)
    client = APNsClient(
        apns_simulator.bundle_id, endpoint=apns_simulator.url,
        tokens=ProviderTokens(key, apns_simulator.key_id, apns_simulator.team_id),
        ssl_context=client_ssl_context(ca_file=apns_simulator.ca_path), connections=1,
    )  # fmt: skip
    results = await asyncio.gather(*(client.send(f"{i:064x}", NotificationContent(title="x")) for i in range(300)))
    assert all(result.ok for result in results)
    connection = client.transport._connections[0]  # type: ignore[attr-defined]
    # jh2 remembered up to 65,536 closed streams per connection; only a reset one matters to it.
    assert connection.h2.streams == {} and len(connection.h2._closed_streams) == 0
    await client.aclose()


def test_workers_that_saw_different_provider_tokens_count_two() -> None:
    worker = {"by_outcome": {"Success": 1}, "by_token": {TOKEN: 1}, "provider_tokens": 1}
    merged = merge_counters([worker | {"provider_token_ids": ["a"]}, worker | {"provider_token_ids": ["b"]}])
    assert merged["provider_tokens"] == 2
    same = merge_counters([worker | {"provider_token_ids": ["a"]}, worker | {"provider_token_ids": ["a"]}])
    assert same["provider_tokens"] == 1


async def test_a_goaway_naming_a_credential_failure_is_classified_not_resent(apns_simulator: SimulatorProcess) -> None:
    key = load_signing_key(apns_simulator.private_key_pem)
    client = APNsClient(
        apns_simulator.bundle_id, endpoint=apns_simulator.url,
        tokens=ProviderTokens(key, apns_simulator.key_id, apns_simulator.team_id),
        ssl_context=client_ssl_context(ca_file=apns_simulator.ca_path), connections=1,
    )  # fmt: skip
    assert (await client.send(TOKEN, NotificationContent(title="warm"))).ok
    apns_simulator.set_faults(goaway_after=1, goaway_reason="BadCertificate")
    results = await asyncio.gather(*(client.send(f"{i:064x}", NotificationContent(title="x")) for i in range(20)))
    await client.aclose()
    refused = [r for r in results if not r.ok]
    assert refused and {(r.reason, r.outcome) for r in refused} == {("BadCertificate", Outcome.CREDENTIAL)}
    assert apns_simulator.counters()["total"] < 20  # the refused ones were not resent to APNs
