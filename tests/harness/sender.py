"""What the sender tests share (a pytest plugin): the store and Redis in the environment, queueing
notifications the way the gateway does, waiting for records."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import pytest
import redis
from sqlalchemy import Engine, func, insert, select

from harness.apns import credential_for
from noti.queue import QueuedNotification, StreamKeys
from noti.store import records
from noti.store.models import Device, Notification, NotificationStatus

if TYPE_CHECKING:
    from noti.sender.service import Sender


class Server(Protocol):
    """An APNs server the sender is pointed at (the simulator, Pushy): the app it serves."""

    @property
    def bundle_id(self) -> str: ...


def stream_keys_of(simulator: Server) -> StreamKeys:
    """The queues of the credential the tests give ``simulator``'s app (``sender_env()`` sets NOTI_CREDENTIAL)."""
    return StreamKeys(credential_for(simulator.bundle_id))


def enqueue(
    engine: Engine,
    client: redis.Redis,
    simulator: Server,
    tokens: list[str],
    *,
    with_devices: bool = False,
    campaign: str | None = None,
    content: Mapping[str, Any] | None = None,
) -> list[uuid.UUID]:
    """Write queued records for ``tokens`` and add them to the credential's transactional stream
    (as ``campaign``'s records, when given, which the store counts as they finish), with ``content``'s
    fields (e.g. ``collapse_id``) besides the title and body."""
    content = dict(content or {})
    app = simulator.bundle_id
    device_ids: dict[str, int] = {}
    if with_devices:
        with engine.begin() as connection:
            connection.execute(insert(Device), [{"app": app, "device_token": t, "tags": []} for t in tokens])
            device_ids = dict(
                connection.execute(select(Device.device_token, Device.id).where(Device.app == app)).all()  # type: ignore[arg-type]
            )
    rows: list[dict[str, Any]] = [
        {
            "id": uuid.uuid4(),
            "device_id": device_ids.get(token),
            "device_token": token,
            "app": app,
            "title": "Hello",
            "body": f"#{i}",
            "status": NotificationStatus.QUEUED,
            "campaign": campaign,
            **content,
        }
        for i, token in enumerate(tokens)
    ]
    for start in range(0, len(rows), 2000):
        with engine.begin() as connection:
            records.insert_notifications(connection, rows[start : start + 2000])
    stream = stream_keys_of(simulator).transactional_stream
    pipe = client.pipeline(transaction=False)
    for row in rows:
        message = QueuedNotification(
            id=row["id"], device_token=row["device_token"], app=app,
            content={"title": "Hello", "body": row["body"], **content}, device_id=row["device_id"], campaign=campaign,
        )  # fmt: skip
        pipe.xadd(stream, message.encode())  # type: ignore[arg-type]
    pipe.execute()
    return [row["id"] for row in rows]


def final_count(engine: Engine) -> int:
    with engine.connect() as connection:
        query = select(func.count()).where(Notification.status.in_(["sent", "failed", "invalid_token"]))
        return int(connection.execute(query).scalar_one())


def wait_for_final(engine: Engine, expected: int, seconds: float) -> int:
    """Poll until ``expected`` records are final; returns the count reached."""
    deadline = time.monotonic() + seconds
    count = final_count(engine)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.25)
        count = final_count(engine)
    return count


async def run_until_final(sender: Sender, engine: Engine, expected: int, seconds: float = 60) -> None:
    """Run ``sender`` until ``expected`` records are final or ``seconds`` passed, then stop it."""
    task = asyncio.create_task(sender.run())
    try:
        for _ in range(int(seconds * 10)):
            if await asyncio.to_thread(final_count, engine) >= expected:
                break
            await asyncio.sleep(0.1)
    finally:
        sender.stop()
        await asyncio.wait_for(task, 30)


def statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(select(Notification.status, func.count()).group_by(Notification.status)).all()
    return {str(status): int(count) for status, count in rows}


@pytest.fixture
def sender_env(
    clean_db: Engine, clean_redis: redis.Redis, redis_url: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's (clean) PostgreSQL and Redis in the environment, where the settings of a sender are read from
    (as in its pod)."""
    monkeypatch.setenv("NOTI_DATABASE_URL", database_url)
    monkeypatch.setenv("NOTI_REDIS_URL", redis_url)
