"""Channels and broadcasts over REST: the gateway asks a sender of the credential, it asks the simulator (TLS HTTP/2).

Real PostgreSQL (and the ``noti dev`` SQLite), Redis, sender and simulator; nothing mocked.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
import redis
from sqlalchemy import Engine

from harness.apns import SimulatorProcess
from harness.gateway import StoreGateway, credential_of
from noti.queue import StreamKeys
from noti.sender.config import SenderConfig
from noti.sender.service import Sender

pytestmark = pytest.mark.usefixtures("sender_env")
UPDATE = {"content_state": {"home": 2, "away": 1}, "alert": {"title": "Goal!", "body": "2-1"}}


def _config(simulator: SimulatorProcess) -> SenderConfig:
    env = {key.removeprefix("NOTI_").lower(): value for key, value in simulator.sender_env().items()}
    return SenderConfig(**{"sender_health_port": 0, "sender_backoff_base": 0.05, **env})


async def _running_sender(simulator: SimulatorProcess, engine: Engine) -> AsyncIterator[None]:
    sender = Sender(_config(simulator), engine=engine)
    task = asyncio.create_task(sender.run())
    for _ in range(200):  # until it says it serves the app: only then does the gateway ask it
        if await sender.redis.exists(sender.queue.status):
            break
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        sender.stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def gateway(any_store: StoreGateway, apns_simulator: SimulatorProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway (on each store in turn) with a sender of the simulator's credential running."""
    state = any_store.app.state.gateway
    state.settings = dataclasses.replace(state.settings, gateway_channel_seconds=20.0)
    async for _ in _running_sender(apns_simulator, any_store.engine):
        async with any_store.client(any_store.key("backend")) as client:
            yield client


APP = {"app": "com.example.app", "environment": "sandbox"}


async def test_a_channel_is_created_listed_read_broadcast_to_and_deleted(
    gateway: httpx.AsyncClient, apns_simulator: SimulatorProcess
) -> None:
    at_apns = apns_simulator.counters()["channels"]["channels"]  # channels stay at APNs from test to test
    created = await gateway.post(
        "/api/channels/", json={**APP, "message_storage_policy": 1, "name": "final", "labels": {"match": "42"}}
    )
    assert created.status_code == 201, created.text
    channel = created.json()
    channel_id = channel["channel_id"]
    assert (channel["message_storage_policy"], channel["name"], channel["source"]) == (1, "final", "api")

    listed = (await gateway.get("/api/channels/", params=APP)).json()["results"]
    assert [c["channel_id"] for c in listed] == [channel_id]
    read = await gateway.get(f"/api/channels/{channel_id}", params=APP)
    assert read.status_code == 200 and read.json()["labels"] == {"match": "42"}

    sent = await gateway.post("/api/broadcasts/", json={**APP, "channel_id": channel_id, **UPDATE, "priority": 5})
    assert sent.status_code == 201, sent.text
    assert sent.json()["status"] == "sent"
    record = (await gateway.get(f"/api/notifications/{sent.json()['id']}/")).json()
    assert (record["status"], record["push_type"], record["priority"]) == ("sent", "liveactivity", 5)
    assert (record["channel_id"], record["device_token"]) == (channel_id, "")
    assert record["data"]["aps"]["content-state"] == {"home": 2, "away": 1}
    assert apns_simulator.counters()["channels"]["by_channel"] == {channel_id: 1}

    assert (await gateway.delete(f"/api/channels/{channel_id}", params=APP)).status_code == 204
    assert (await gateway.get(f"/api/channels/{channel_id}", params=APP)).status_code == 404
    assert (await gateway.get("/api/channels/", params=APP)).json()["results"] == []
    assert apns_simulator.counters()["channels"]["channels"] == at_apns


async def test_a_broadcast_to_an_unknown_channel_is_a_404_and_a_failed_record(gateway: httpx.AsyncClient) -> None:
    unknown = base64.b64encode(b"\x05" * 16).decode()
    answer = await gateway.post("/api/broadcasts/", json={**APP, "channel_id": unknown, **UPDATE})
    assert answer.status_code == 404
    assert "ChannelNotRegistered" in answer.json()["detail"]
    record_id = answer.json()["detail"].rsplit("notification ", 1)[1].rstrip(")")
    record = (await gateway.get(f"/api/notifications/{record_id}/")).json()
    assert (record["status"], record["apns_reason"]) == ("failed", "ChannelNotRegistered")


async def test_a_broadcast_too_large_is_refused_before_it_is_sent(
    gateway: httpx.AsyncClient, apns_simulator: SimulatorProcess
) -> None:
    channel_id = (await gateway.post("/api/channels/", json=APP)).json()["channel_id"]
    answer = await gateway.post(
        "/api/broadcasts/", json={**APP, "channel_id": channel_id, "content_state": {"text": "x" * 5200}}
    )
    assert answer.status_code == 422 and "5120" in answer.json()["detail"]
    assert apns_simulator.counters()["channels"]["broadcasts"] == 0


async def test_a_bad_storage_policy_is_refused(gateway: httpx.AsyncClient) -> None:
    answer = await gateway.post("/api/channels/", json={**APP, "message_storage_policy": 3})
    assert answer.status_code == 422 and "message_storage_policy" in answer.text


async def test_an_expiration_on_a_channel_without_storage_is_apples_bad_expiration(
    gateway: httpx.AsyncClient,
) -> None:
    channel_id = (await gateway.post("/api/channels/", json={**APP, "message_storage_policy": 0})).json()["channel_id"]
    answer = await gateway.post(
        "/api/broadcasts/", json={**APP, "channel_id": channel_id, **UPDATE, "expiration": 1_900_000_000}
    )
    assert answer.status_code == 422 and "BadExpirationDate" in answer.json()["detail"]


async def test_reading_a_channel_needs_read_and_creating_one_needs_send(any_store: StoreGateway) -> None:
    from noti.gateway.auth import Scope, create_api_key

    reader = create_api_key(any_store.engine, "dashboard", [Scope.READ])
    async with any_store.client(reader) as client:
        assert (await client.get("/api/channels/")).status_code == 200
        assert (await client.post("/api/channels/", json=APP)).status_code == 403


async def test_without_a_sender_the_gateway_says_so(any_store: StoreGateway, clean_redis: redis.Redis) -> None:
    async with any_store.client(any_store.key("backend")) as client:
        never_served = await client.post("/api/channels/", json=APP)
        assert never_served.status_code == 404 and "APNsCredential" in never_served.json()["detail"]
        # Served once, but its senders are gone now: the request waits its time, then a 503.
        clean_redis.hset(StreamKeys(credential_of("com.example.app")).status, mapping={"state": "Ready"})
        gone = await client.post("/api/channels/", json=APP)
    assert gone.status_code == 503 and "answered" in gone.json()["detail"]
