"""The APNs client against the simulator over real TLS HTTP/2."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from harness.apns import SimulatorProcess
from noti.apns.client import APNsClient, client_ssl_context
from noti.apns.payload import NotificationContent
from noti.apns.reasons import Outcome
from noti.apns.tokens import ProviderTokens, load_signing_key, mint

TOKEN = "ab" * 32


def _client(simulator: SimulatorProcess, tokens: ProviderTokens | None = None, connections: int = 2) -> APNsClient:
    tokens = tokens or ProviderTokens(load_signing_key(simulator.private_key_pem), simulator.key_id, simulator.team_id)
    return APNsClient(
        simulator.bundle_id,
        endpoint=simulator.url,
        tokens=tokens,
        ssl_context=client_ssl_context(ca_file=simulator.ca_path),
        connections=connections,
    )


@pytest.fixture
async def client(apns_simulator: SimulatorProcess) -> AsyncIterator[APNsClient]:
    client = _client(apns_simulator)
    yield client
    await client.aclose()


async def test_success_returns_apns_id_and_one_provider_token_serves_many(
    client: APNsClient, apns_simulator: SimulatorProcess
) -> None:
    results = await asyncio.gather(
        *(client.send(f"{i:064x}", NotificationContent(title="Hi", body=str(i))) for i in range(500))
    )
    assert {r.outcome for r in results} == {Outcome.SUCCESS}
    assert all(r.status_code == 200 and r.apns_id for r in results)
    counters = apns_simulator.counters()
    assert counters["by_outcome"] == {"Success": 500}
    assert counters["provider_tokens"] == 1


async def test_each_reason_class_is_classified(client: APNsClient, apns_simulator: SimulatorProcess) -> None:
    apns_simulator.set_faults(unregistered=["cd" * 32], bad_tokens=["ef" * 32])
    unregistered = await client.send("cd" * 32, NotificationContent(title="x"))
    assert (unregistered.status_code, unregistered.reason, unregistered.outcome) == (
        410,
        "Unregistered",
        Outcome.INVALID_TOKEN,
    )
    assert unregistered.timestamp is not None
    bad = await client.send("ef" * 32, NotificationContent(title="x"))
    assert (bad.status_code, bad.reason, bad.outcome) == (400, "BadDeviceToken", Outcome.INVALID_TOKEN)
    apns_simulator.set_faults(rate_503=1.0)
    unavailable = await client.send(TOKEN, NotificationContent(title="x"))
    assert (unavailable.status_code, unavailable.outcome) == (503, Outcome.RETRYABLE)
    assert unavailable.retry_after > 0
    apns_simulator.set_faults(rate_503=0.0)
    wrong_topic = APNsClient(
        "com.other.app",
        endpoint=apns_simulator.url,
        tokens=client.tokens,
        ssl_context=client_ssl_context(ca_file=apns_simulator.ca_path),
    )
    refused = await wrong_topic.send(TOKEN, NotificationContent(title="x"))
    await wrong_topic.aclose()
    assert (refused.reason, refused.outcome) == ("TopicDisallowed", Outcome.PERMANENT)


async def test_unknown_key_is_a_credential_failure(apns_simulator: SimulatorProcess) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    impostor = ProviderTokens(ec.generate_private_key(ec.SECP256R1()), apns_simulator.key_id, apns_simulator.team_id)
    client = _client(apns_simulator, impostor)
    result = await client.send(TOKEN, NotificationContent(title="x"))
    await client.aclose()
    assert (result.status_code, result.reason, result.outcome) == (403, "InvalidProviderToken", Outcome.CREDENTIAL)


async def test_expired_provider_token_is_refreshed_once_and_resent(
    apns_simulator: SimulatorProcess, clean_redis: object, redis_url: str
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    key = load_signing_key(apns_simulator.private_key_pem)
    # Another process stored a token APNs now calls expired (its iat is over an hour old).
    stale = mint(key, apns_simulator.key_id, apns_simulator.team_id, int(time.time()) - 3700)
    await redis.set("pt", f"{int(time.time())}:{stale}")
    tokens = ProviderTokens(key, apns_simulator.key_id, apns_simulator.team_id, redis=redis, redis_key="pt")
    client = _client(apns_simulator, tokens)
    result = await client.send(TOKEN, NotificationContent(title="x"))
    await client.aclose()
    assert result.outcome is Outcome.SUCCESS
    assert apns_simulator.counters()["by_outcome"] == {"ExpiredProviderToken": 1, "Success": 1}
    assert tokens.minted == 1
    fresh = await tokens.current()
    assert fresh != stale
    assert (await redis.get("pt")).decode().endswith(fresh)
    await redis.aclose()


async def test_goaway_and_dropped_connections_reconnect(client: APNsClient, apns_simulator: SimulatorProcess) -> None:
    apns_simulator.set_faults(goaway_after=50)
    results = await asyncio.gather(*(client.send(f"{i:064x}", NotificationContent(title="x")) for i in range(400)))
    outcomes = [r.outcome for r in results]
    assert outcomes.count(Outcome.SUCCESS) + outcomes.count(Outcome.RETRYABLE) == 400
    assert outcomes.count(Outcome.SUCCESS) >= 350, {(r.status_code, r.reason) for r in results}
    assert client.transport.connects >= 8  # type: ignore[attr-defined]
    apns_simulator.set_faults(goaway_after=0, drop_rate=1.0)
    dropped = await client.send(TOKEN, NotificationContent(title="x"))
    assert (dropped.status_code, dropped.outcome) == (0, Outcome.RETRYABLE)
    apns_simulator.set_faults(drop_rate=0.0)
    again = await client.send(TOKEN, NotificationContent(title="x"))
    assert again.outcome is Outcome.SUCCESS


async def test_2000_concurrent_sends_share_two_connections(
    client: APNsClient, apns_simulator: SimulatorProcess
) -> None:
    # 2,000 in flight: both connections' 1,000 streams each, no more connections opened.
    results = await asyncio.gather(
        *(client.send(f"{i:064x}", NotificationContent(title="Sale", body=str(i))) for i in range(2000))
    )
    assert all(result.ok for result in results)
    assert len({result.apns_id for result in results}) == 2000
    assert client.transport.connects == 2  # type: ignore[attr-defined]
    counters = apns_simulator.counters()
    assert counters["by_outcome"] == {"Success": 2000}
    assert len(counters["by_token"]) == 2000
    assert counters["provider_tokens"] == 1


async def test_any_httpx_transport_can_carry_the_client(apns_simulator: SimulatorProcess) -> None:
    tokens = ProviderTokens(
        load_signing_key(apns_simulator.private_key_pem), apns_simulator.key_id, apns_simulator.team_id
    )
    stock = httpx.AsyncHTTPTransport(http2=True, verify=client_ssl_context(ca_file=apns_simulator.ca_path))
    client = APNsClient(apns_simulator.bundle_id, endpoint=apns_simulator.url, tokens=tokens, transport=stock)
    apns_id = "0f3c9d4e-8a1b-4c2d-9e7f-5a6b7c8d9e0f"
    sent = await client.send(TOKEN, NotificationContent(title="x"), apns_id=apns_id)
    apns_simulator.set_faults(unregistered=["cd" * 32])
    gone = await client.send("cd" * 32, NotificationContent(title="x"))
    await client.aclose()
    assert (sent.status_code, sent.apns_id, sent.outcome) == (200, apns_id, Outcome.SUCCESS)
    assert (gone.status_code, gone.reason, gone.outcome) == (410, "Unregistered", Outcome.INVALID_TOKEN)
    assert gone.timestamp is not None
