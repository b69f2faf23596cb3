"""The channel client against the simulator over TLS HTTP/2: each channel operation, broadcasts, Apple's errors."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import orjson
import pytest

from harness.apns import SimulatorProcess
from noti.apns.channels import ChannelClient, StoragePolicy, management_endpoint
from noti.apns.client import client_ssl_context
from noti.apns.tokens import ProviderTokens, load_signing_key

UPDATE = orjson.dumps({"aps": {"event": "update", "timestamp": 1_800_000_000, "content-state": {"score": "2-1"}}})


@pytest.fixture
async def client(apns_simulator: SimulatorProcess) -> AsyncIterator[ChannelClient]:
    key = load_signing_key(apns_simulator.private_key_pem)
    channels = ChannelClient(
        apns_simulator.bundle_id,
        environment="sandbox",
        tokens=ProviderTokens(key, apns_simulator.key_id, apns_simulator.team_id),
        management_url=apns_simulator.channels_url,
        push_url=apns_simulator.url,
        ssl_context=client_ssl_context(ca_file=apns_simulator.ca_path),
    )
    yield channels
    await channels.aclose()


def test_apples_management_hosts_and_ports_per_environment() -> None:
    assert management_endpoint("sandbox") == "https://api-manage-broadcast.sandbox.push.apple.com:2195"
    assert management_endpoint("production") == "https://api-manage-broadcast.push.apple.com:2196"
    assert management_endpoint("production", "https://127.0.0.1:9/") == "https://127.0.0.1:9"


async def test_create_read_list_and_delete_a_channel(client: ChannelClient, apns_simulator: SimulatorProcess) -> None:
    created = await client.create(StoragePolicy.MOST_RECENT)
    assert created.status == 201 and created.channel_id and created.request_id
    read = await client.read(created.channel_id)
    assert (read.status, read.storage_policy, read.push_type) == (200, 1, "LiveActivity")
    listed = await client.list()
    assert created.channel_id in listed.channels
    deleted = await client.delete(created.channel_id)
    assert deleted.status == 204
    again = await client.delete(created.channel_id)
    assert (again.status, again.reason, again.missing) == (400, "ChannelNotRegistered", True)
    counters = apns_simulator.counters()["channels"]
    assert (counters["created"], counters["deleted"], counters["read"], counters["listed"]) == (1, 1, 1, 1)


async def test_a_broadcast_reaches_a_channel(client: ChannelClient, apns_simulator: SimulatorProcess) -> None:
    channel = (await client.create(StoragePolicy.NO_STORAGE)).channel_id
    assert channel is not None
    answer = await client.broadcast(channel, UPDATE, priority=5, request_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    assert answer.ok and answer.request_id == "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    assert answer.apns_unique_id  # the sandbox's id for Apple's Push Notifications Console
    assert apns_simulator.counters()["channels"]["by_channel"] == {channel: 1}


async def test_a_broadcast_to_an_unknown_channel_is_refused(client: ChannelClient) -> None:
    answer = await client.broadcast(base64.b64encode(b"\x07" * 16).decode(), UPDATE)
    assert (answer.status, answer.reason) == (400, "ChannelNotRegistered")
    assert "no such channel" in answer.describe()


async def test_a_broadcast_payload_over_5120_bytes_is_too_large(client: ChannelClient) -> None:
    channel = (await client.create(StoragePolicy.MOST_RECENT)).channel_id
    assert channel is not None
    big = orjson.dumps({"aps": {"event": "update", "content-state": {"text": "x" * 5200}}})
    answer = await client.broadcast(channel, big)
    assert (answer.status, answer.reason) == (413, "PayloadTooLarge")


async def test_a_bad_storage_policy_is_refused(client: ChannelClient) -> None:
    answer = await client.create(5)
    assert (answer.status, answer.reason) == (400, "MissingChannelQueueSize")
    assert "message-storage-policy must be 0" in answer.describe()


async def test_channel_management_is_not_on_the_push_host(apns_simulator: SimulatorProcess) -> None:
    key = load_signing_key(apns_simulator.private_key_pem)
    wrong = ChannelClient(
        apns_simulator.bundle_id, environment="sandbox",
        tokens=ProviderTokens(key, apns_simulator.key_id, apns_simulator.team_id),
        management_url=apns_simulator.url, push_url=apns_simulator.url,
        ssl_context=client_ssl_context(ca_file=apns_simulator.ca_path),
    )  # fmt: skip
    try:
        answer = await wrong.list()
    finally:
        await wrong.aclose()
    assert answer.status in (404, 405) and not answer.channels  # the push host knows no GET, nor /1/apps
