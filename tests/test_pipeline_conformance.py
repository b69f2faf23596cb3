"""The whole pipeline against Pushy's independent APNs server: gateway → Redis → ``noti sender`` → Pushy.

Every delivery record must end as Pushy decided (by its apns-id, which is the record id), each
notification reach Pushy exactly once (no duplicate, none lost), and devices be deactivated exactly
where Pushy answered Unregistered or BadDeviceToken. Real PostgreSQL, Redis and TLS HTTP/2.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import Engine, select, update

from harness.gateway import APP, credential_of, stream_of
from harness.procs import reap
from harness.pushy import Decision, PushyServer
from harness.sender import wait_for_final
from noti.queue import CONSUMER_GROUP
from noti.store.models import Device, Notification

STATUS_OF = {200: "sent", 400: "invalid_token", 410: "invalid_token"}  # what Pushy answers these tokens


@pytest.fixture
def sender_log(
    pushy: PushyServer, clean_db: Engine, clean_redis: redis.Redis, database_url: str, redis_url: str, tmp_path: Path
) -> Iterator[Path]:
    """Runs ``noti sender`` for Pushy's credential, as the operator would, until the test ends; its output file."""
    env = {
        **os.environ, **pushy.sender_env(), "NOTI_DATABASE_URL": database_url, "NOTI_REDIS_URL": redis_url,
        "NOTI_SENDER_HEALTH_PORT": "0", "NOTI_SENDER_BACKOFF_BASE": "0.05", "NOTI_SENDER_BACKOFF_MAX": "0.5",
        "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    log_path = tmp_path / "sender.log"
    with log_path.open("wb") as output:
        # Away from the repository root, whose operator/ folder would shadow the standard library.
        process = subprocess.Popen(
            [sys.executable, "-m", "noti.cli", "sender", "--credential", credential_of(APP)],
            env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield log_path
    finally:
        process.terminate()
        reap(process, 30)


async def test_every_record_ends_as_pushy_decided_once_and_only_dead_devices_are_deactivated(
    client: httpx.AsyncClient,
    pushy: PushyServer,
    clean_db: Engine,
    clean_redis: redis.Redis,
    sender_log: Path,
) -> None:
    registered = list(pushy.known_tokens[:300])
    expired = list(pushy.expired_tokens)  # Pushy: 410 Unregistered with the time each expired
    # Apple's tokens may be longer than 32 bytes and Noti accepts them; Pushy's registry holds only
    # 64-digit tokens and answers any other length BadDeviceToken.
    bad = [secrets.token_hex(33) for _ in range(20)]
    for token in registered + expired + bad:
        response = await client.post("/api/devices/", json={"device_token": token, "app": APP})
        assert response.status_code == 201, response.text
    # Apple: a 410's timestamp is when the token stopped being valid; a device registered after it
    # keeps its new registration. Pushy dates its expired tokens days back: all but the last were
    # last registered before that, the last one (registered just now) re-registered after it.
    with clean_db.begin() as connection:
        for token in expired[:-1]:
            before = datetime.fromtimestamp((pushy.expired_tokens[token] - 60_000) / 1000, UTC)
            connection.execute(update(Device).where(Device.device_token == token).values(registered_at=before))
    bulk = await client.post(
        "/api/notifications/bulk/", json={"device_tokens": registered + expired + bad, "title": "Sale", "body": "50%"}
    )
    assert bulk.status_code == 202, bulk.text
    singles = [
        await client.post("/api/notifications/", json={"device_token": token, "title": "Your order", "body": "shipped"})
        for token in registered[:20]
    ]
    assert all(single.status_code == 202 for single in singles)
    expected = len(registered) + len(expired) + len(bad) + len(singles)

    reached = await asyncio.to_thread(wait_for_final, clean_db, expected, 90)
    if reached != expected:
        said = await asyncio.to_thread(sender_log.read_text)
        pytest.fail(f"{reached}/{expected} records final; the sender said:\n{said[-3000:]}")

    decisions = await asyncio.to_thread(pushy.decisions, expect=expected)
    with clean_db.connect() as connection:
        records = {row.id: row for row in connection.execute(select(Notification))}
        inactive = set(connection.execute(select(Device.device_token).where(Device.is_active.is_(False))).scalars())
    per_record = Counter(decision.apns_id for decision in decisions)
    # Each record reached Pushy exactly once, and nothing else did.
    assert per_record == Counter({str(record_id): 1 for record_id in records})
    by_id: dict[str, Decision] = {decision.apns_id: decision for decision in decisions if decision.apns_id}
    for record_id, record in records.items():
        decision = by_id[str(record_id)]
        assert decision.device_token == record.device_token
        assert (record.status, record.status_code, record.apns_reason) == (
            STATUS_OF[decision.status],
            decision.status,
            decision.reason,
        ), f"record {record_id} does not end as Pushy decided ({decision})"
    assert Counter(decision.outcome for decision in decisions) == {
        "Success": len(registered) + len(singles),
        "Unregistered": len(expired),
        "BadDeviceToken": len(bad),
    }
    dead = {decision.device_token for decision in decisions if decision.reason in {"Unregistered", "BadDeviceToken"}}
    assert dead == set(expired + bad)
    assert inactive == set(expired[:-1] + bad)  # the device registered after its 410's timestamp stays active
    # Every answer of Pushy's sandbox carries apns-unique-id; the record keeps it, the API shows it.
    assert all(uuid.UUID(record.apns_unique_id) for record in records.values())
    some = next(iter(records.values()))
    shown = await client.get(f"/api/notifications/{some.id}/")
    assert shown.json()["apns_unique_id"] == some.apns_unique_id

    stream = stream_of(APP, "sandbox")
    assert clean_redis.xpending(stream, CONSUMER_GROUP)["pending"] == 0
