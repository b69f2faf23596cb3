"""Campaign fan-out: stored devices → delivery records and campaign stream entries, per second.

Runs ``noti.campaigns.fan_out`` (what the operator runs for a NotificationCampaign) next to
the obvious way of doing the same chunked, resumable work with the libraries' usual calls:
an ``INSERT ... VALUES (...), ... ON CONFLICT DO NOTHING RETURNING id`` per chunk and one
pipelined XADD per message. Both run in the same session on the same throwaway PostgreSQL
(fsync on, a database each holding the same devices) and Redis, and the ratio is printed.
Usage: python bench/bench_fanout.py [--devices 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import redis.asyncio as aioredis
from _services import PostgresServer, RedisServer
from sqlalchemy import Engine, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from noti.campaigns import CampaignSpec, fan_out
from noti.queue import QueuedNotification, StreamKeys
from noti.store import migrate
from noti.store.db import make_engine
from noti.store.models import Device, Notification, NotificationStatus, utcnow

APP = "com.example.bench"
CHUNK = 1000


def _spec(name: str) -> CampaignSpec:
    return CampaignSpec.from_manifest({
        "apiVersion": "noti.dev/v1alpha1", "kind": "NotificationCampaign",
        "metadata": {"name": name, "namespace": "bench", "uid": name},
        "spec": {"credentialRef": {"name": "bench"}, "audience": {"allDevices": True},
                 "notification": {"title": "Winter sale", "body": "30% off", "data": {"deeplink": "app://sale"}}},
    })  # fmt: skip


async def _usual(engine: Engine, redis: aioredis.Redis, credential: StreamKeys, spec: CampaignSpec) -> int:
    """The peer: the same chunks, records and messages, written with the libraries' everyday calls."""
    stream, after, total = credential.campaign_stream(spec.name), 0, 0
    while True:
        with engine.begin() as connection:
            devices = connection.execute(
                select(Device.id, Device.device_token)
                .where(Device.app == APP, Device.is_active.is_(True), Device.id > after)
                .order_by(Device.id)
                .limit(CHUNK)
            ).all()
            if not devices:
                return total
            now = utcnow()
            rows = [
                {"id": spec.record_id(str(d.id)), "device_id": d.id, "device_token": d.device_token, "app": APP,
                 "campaign": spec.name, "status": NotificationStatus.QUEUED, "queued_at": now, "created_at": now,
                 "title": "Winter sale", "body": "30% off", "data": {"deeplink": "app://sale"}}
                for d in devices
            ]  # fmt: skip
            # the primary key of the day-partitioned table (id, created_at): the only arbiter a partitioned table has
            statement = pg_insert(Notification).on_conflict_do_nothing(index_elements=["id", "created_at"])
            written = set(connection.execute(statement.returning(Notification.id), rows).scalars())
        async with redis.pipeline(transaction=False) as pipe:
            for row in rows:
                message = QueuedNotification(row["id"], row["device_token"], APP, spec.content,
                                             device_id=row["device_id"], campaign=spec.name)  # fmt: skip
                pipe.xadd(stream, message.encode())  # type: ignore[arg-type]
            await pipe.execute()
        total += len(written)
        after = devices[-1].id


async def _run(label: str, database_url: str, redis_url: str, devices: int, usual: bool) -> float:
    engine = make_engine(database_url, pool_size=2)
    redis = aioredis.Redis.from_url(redis_url)
    credential = StreamKeys("default/bench")
    spec = _spec("usual" if usual else "ours")
    try:
        started = time.perf_counter()
        if usual:
            count = await _usual(engine, redis, credential, spec)
        else:
            count = (await fan_out(engine, redis, credential, spec, app=APP, chunk_size=CHUNK)).written
        rate = count / (time.perf_counter() - started)
        assert count == devices and await redis.xlen(credential.campaign_stream(spec.name)) == devices
        print(f"  {label:<42} {rate:>10,.0f} notifications/s")
        return rate
    finally:
        await redis.aclose()
        engine.dispose()


def _seed(database_url: str, devices: int) -> None:
    engine = make_engine(database_url, pool_size=1)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        for start in range(0, devices, 50_000):
            rows = [{"app": APP, "device_token": f"{n:064x}", "tags": []}
                    for n in range(start, min(devices, start + 50_000))]  # fmt: skip
            connection.execute(insert(Device), rows)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000, help="Devices in the campaign's audience")
    args = parser.parse_args()
    postgres, redis_server = PostgresServer(durable=True), RedisServer()
    postgres.init()
    postgres.start()
    redis_server.start()
    try:
        print(f"fan-out of {args.devices:,} devices in chunks of {CHUNK}: PostgreSQL (fsync on) + Redis on loopback")
        rates = {}
        # Each on its own database holding the same devices, so neither writes into the other's records.
        for label, usual in (("noti.campaigns.fan_out", False), ("INSERT ... VALUES RETURNING + XADD each", True)):
            database_url = postgres.create_database("usual" if usual else "ours")
            _seed(database_url, args.devices)
            rates[usual] = asyncio.run(_run(label, database_url, redis_server.url, args.devices, usual))
        print(f"ratio fan_out / usual: x{rates[False] / rates[True]:.2f}")
    finally:
        redis_server.cleanup()
        postgres.cleanup()


if __name__ == "__main__":
    main()
