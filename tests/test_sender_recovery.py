"""A refused credential, or a wrong topic, pauses the sender without losing or deactivating anything, and it
resumes by itself once APNs accepts it again — against Pushy's independent APNs server, real Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, select

from harness.apns import credential_for
from harness.procs import free_port
from harness.pushy import PushyServer
from harness.sender import enqueue, final_count, statuses, stream_keys_of
from noti.apns.tokens import ProviderTokens, load_signing_key, mint
from noti.apns.transport import H2Transport
from noti.sender.service import Sender
from noti.settings import SenderSettings, Settings
from noti.store.models import Device

WRONG_TOPIC = "com.example.other"  # a bundle id Pushy knows none of the device tokens for


@dataclass(frozen=True)
class App:
    bundle_id: str


def _config(pushy: PushyServer, **overrides: object) -> SenderSettings:
    env = {key.removeprefix("NOTI_").lower(): value for key, value in pushy.sender_env().items()}
    settings: dict[str, object] = {
        "credential": "default/pushy", "sender_health_port": free_port(), "sender_backoff_base": 0.05,
        "sender_backoff_max": 0.2, "sender_claim_idle_seconds": 2, **env, **overrides,
    }  # fmt: skip
    return Settings(**settings).sender  # type: ignore[arg-type]


@pytest.fixture
async def running() -> AsyncIterator[list[Sender]]:
    """Senders a test starts (``run`` in a task); stopped at its end."""
    senders: list[Sender] = []
    tasks: list[asyncio.Task[None]] = []

    def start(sender: Sender) -> Sender:
        senders.append(sender)
        tasks.append(asyncio.create_task(sender.run()))
        return sender

    yield start  # type: ignore[misc]
    for sender in senders:
        sender.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 40)


async def _until(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.1)
    return bool(condition())  # type: ignore[operator]


async def _health(sender: Sender) -> tuple[int, dict[str, object]]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sender.health_port}") as http:
        ready = await http.get("/readyz")
    return ready.status_code, ready.json()


def _wrong_key(tmp_path: Path) -> Path:
    path = tmp_path / "AuthKey.p8"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _published(client: redis.Redis, app: str) -> tuple[bytes | None, bytes | None]:
    status = client.hgetall(stream_keys_of(App(app)).status)
    return status.get(b"state"), status.get(b"reason")


# --- DeviceTokenNotForTopic -----------------------------------------------------------------------


async def test_a_wrong_topic_pauses_sending_and_deactivates_no_device(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, pushy: PushyServer, running: object
) -> None:
    tokens = list(pushy.known_tokens[:60])  # Pushy knows them for its own bundle id only
    enqueue(clean_db, clean_redis, App(WRONG_TOPIC), tokens, with_devices=True)
    sender = running(Sender(_config(pushy, apns_bundle_id=WRONG_TOPIC, credential=credential_for(WRONG_TOPIC))))  # type: ignore[operator]

    assert await _until(lambda: sender.credential_failure is not None, 30), statuses(clean_db)
    await asyncio.sleep(1.0)  # answers still in flight when it paused are in too
    assert sender.credential_failure == "DeviceTokenNotForTopic"
    code, state = await _health(sender)
    assert (code, state["credential_failure"]) == (503, "DeviceTokenNotForTopic")
    assert _published(clean_redis, WRONG_TOPIC) == (b"CredentialFailed", b"DeviceTokenNotForTopic")
    with clean_db.connect() as connection:
        active = connection.execute(select(Device.is_active)).scalars().all()
    assert active == [True] * 60  # not one deactivation
    assert final_count(clean_db) == 0  # every record waits, retryable, for a fixed topic
    answers = {decision.outcome for decision in pushy.decisions(expect=20)}
    assert answers == {"DeviceTokenNotForTopic"}


async def test_a_token_of_another_app_among_successes_is_still_a_dead_device(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, pushy: PushyServer, running: object
) -> None:
    foreign = "ab" * 32  # not in Pushy's registry for the topic: DeviceTokenNotForTopic
    tokens = [*pushy.known_tokens[:50], foreign]
    enqueue(clean_db, clean_redis, App(pushy.bundle_id), tokens, with_devices=True)
    sender = running(Sender(_config(pushy)))  # type: ignore[operator]

    assert await _until(lambda: final_count(clean_db) == 51, 30), statuses(clean_db)
    assert statuses(clean_db) == {"sent": 50, "invalid_token": 1}
    with clean_db.connect() as connection:
        inactive = connection.execute(select(Device.device_token).where(Device.is_active.is_(False))).scalars().all()
    assert inactive == [foreign]
    assert sender.credential_failure is None


# --- a refused credential recovers ----------------------------------------------------------------


async def test_a_refused_key_recovers_at_once_when_the_key_file_is_fixed(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, pushy: PushyServer, running: object, tmp_path: Path
) -> None:
    key_file = _wrong_key(tmp_path)
    tokens = list(pushy.known_tokens[:30])
    enqueue(clean_db, clean_redis, App(pushy.bundle_id), tokens)
    # Probes an hour apart: only the changed key file can explain a recovery within seconds.
    sender = running(Sender(_config(pushy, apns_key_file=key_file, sender_probe_base=3600)))  # type: ignore[operator]
    assert await _until(lambda: sender.credential_failure == "InvalidProviderToken", 30)
    assert (await _health(sender))[0] == 503

    fixed = tmp_path / "AuthKey.p8.new"
    fixed.write_bytes(pushy.private_key_pem)
    os.replace(fixed, key_file)  # as a Secret volume's update swaps the file
    assert await _until(lambda: final_count(clean_db) == 30, 20), statuses(clean_db)
    assert statuses(clean_db) == {"sent": 30}
    assert sender.credential_failure is None
    code, state = await _health(sender)
    assert (code, state["credential_failure"]) == (200, None)
    assert _published(clean_redis, pushy.bundle_id) == (b"Ready", b"")
    # The new key's token went on a new connection (Apple refuses token changes on one connection).
    assert isinstance(sender.client.transport, H2Transport) and sender.client.transport.connects >= 2


async def test_a_refused_credential_is_probed_again_with_growing_pauses(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, pushy: PushyServer, running: object, tmp_path: Path
) -> None:
    enqueue(clean_db, clean_redis, App(pushy.bundle_id), list(pushy.known_tokens[:10]))
    config = _config(pushy, apns_key_file=_wrong_key(tmp_path), sender_probe_base=0.4, sender_probe_max=1.6)
    sender = running(Sender(config))  # type: ignore[operator]
    assert await _until(lambda: sender.credential_failure == "InvalidProviderToken", 30)
    first = len(pushy.decisions(expect=1))
    await asyncio.sleep(6.0)
    probes = len(pushy.decisions()) - first
    # Pauses of 0.2-0.4, 0.4-0.8, then 0.8-1.6 s (capped): between 4 and 12 probes in 6 s, not hundreds.
    assert 3 <= probes <= 12, probes
    assert {decision.outcome for decision in pushy.decisions()} == {"InvalidProviderToken"}
    assert final_count(clean_db) == 0 and sender.credential_failure == "InvalidProviderToken"


async def test_a_changed_shared_provider_token_is_tried_at_once(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, pushy: PushyServer, running: object, tmp_path: Path
) -> None:
    key_file = _wrong_key(tmp_path)
    enqueue(clean_db, clean_redis, App(pushy.bundle_id), list(pushy.known_tokens[:5]))
    config = _config(pushy, apns_key_file=key_file, sender_probe_base=3600)
    sender = running(Sender(config))  # type: ignore[operator]
    assert await _until(lambda: sender.credential_failure == "InvalidProviderToken", 30)
    await asyncio.sleep(0.5)
    before = len(pushy.decisions(expect=1))

    key = load_signing_key(key_file.read_bytes())
    shared = ProviderTokens(key, config.apns_key_id, config.apns_team_id).redis_key
    issued = int(time.time()) - 5
    clean_redis.set(shared, f"{issued}:{mint(key, config.apns_key_id, config.apns_team_id, issued)}")
    assert await _until(lambda: len(pushy.decisions()) > before, 5)
