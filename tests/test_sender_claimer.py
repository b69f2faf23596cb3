"""Claiming what a dead sender left pending, on real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis
from sender_support import stream_keys_of, enqueue
from sqlalchemy import Engine

from harness.apns import SimulatorProcess
from noti.queue import CONSUMER_GROUP, QueuedNotification
from noti.sender.claimer import Claimer
from noti.store import records
from noti.store.models import NotificationStatus
from noti.store.records import RecordUpdate


async def test_abandoned_entries_are_resent_unless_final_or_still_ours(
    clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess, redis_url: str
) -> None:
    ids = enqueue(clean_db, clean_redis, apns_simulator, [f"{i:064x}" for i in range(1, 5)])
    stream = stream_keys_of(apns_simulator).transactional_stream
    clean_redis.xgroup_create(stream, CONSUMER_GROUP, id="0")
    read: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = clean_redis.xreadgroup(  # type: ignore[assignment]
        CONSUMER_GROUP, "dead", {stream: ">"}
    )
    entry_of = {QueuedNotification.decode(fields).id: entry_id for entry_id, fields in read[0][1]}
    with clean_db.begin() as connection:  # the dead sender recorded the first one, and died before its ack
        records.apply_outcomes(connection, [RecordUpdate(ids[0], NotificationStatus.SENT)])
    ours = {(stream, entry_of[ids[3]])}  # e.g. waiting for a slow APNs answer in this very sender
    await asyncio.sleep(0.05)

    aredis = aioredis.Redis.from_url(redis_url)
    try:
        page = await Claimer(aredis, clean_db, "alive", idle_seconds=0.01).claim(stream, "0-0", 100, lambda: ours)
    finally:
        await aredis.aclose()

    assert page.already_final == [entry_of[ids[0]]]  # acked, never sent twice
    assert {QueuedNotification.decode(fields).id for _, fields in page.to_send} == {ids[1], ids[2]}
    assert page.last
    assert clean_redis.xpending(stream, CONSUMER_GROUP)["consumers"] == [{"name": b"alive", "pending": 4}]
