"""The sender's recorder writes outcomes in batches; a row the store refuses does not stall the others."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis
from sqlalchemy import Engine, select

from noti.sender.metrics import SenderMetrics
from noti.sender.recorder import REFUSED, Finished, Recorder
from noti.store import records
from noti.store.models import Notification, NotificationStatus
from noti.store.records import RecordUpdate


async def test_an_outcome_the_store_refuses_is_closed_failed_and_the_batch_is_recorded(
    clean_db: Engine, redis_url: str
) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    with clean_db.begin() as connection:
        records.insert_notifications(connection, [{"id": i, "device_token": "ab" * 32, "app": "com.x"} for i in ids])
    redis = aioredis.Redis.from_url(redis_url)
    recorder = Recorder(clean_db, redis, SenderMetrics(), batch_size=10, interval=0.01)
    too_long = "R" * 200  # apns_reason is 64 characters in the store: PostgreSQL refuses the row
    recorder.add(Finished("s", b"1-0", RecordUpdate(ids[0], NotificationStatus.SENT, apns_id="a")))
    recorder.add(Finished("s", b"2-0", RecordUpdate(ids[1], NotificationStatus.FAILED, apns_reason=too_long)))
    recorder.add(Finished("s", b"3-0", RecordUpdate(ids[2], NotificationStatus.INVALID_TOKEN, apns_reason="Unregistered")))
    await recorder.flush()
    await redis.aclose()
    with clean_db.connect() as connection:
        stored = dict(connection.execute(select(Notification.id, Notification.apns_reason)).all())
        statuses = dict(connection.execute(select(Notification.id, Notification.status)).all())
    assert [statuses[i] for i in ids] == ["sent", "failed", "invalid_token"]
    assert stored[ids[1]] == REFUSED and stored[ids[2]] == "Unregistered"
    assert recorder.unacked == 0 and not recorder.holding
