"""The sender in-process against real PostgreSQL, Redis and the APNs simulator over TLS HTTP/2."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import redis
from sqlalchemy import Engine, insert, select

from harness.apns import SimulatorProcess
from harness.procs import free_port
from harness.sender import enqueue, final_count, run_until_final, statuses, stream_keys_of
from noti.queue import ROUTES, CampaignProgress, QueuedNotification, campaign_counters
from noti.sender.service import Sender
from noti.settings import SenderSettings, Settings
from noti.store import records
from noti.store.models import Device, Notification


def _config(simulator: SimulatorProcess, **overrides: object) -> SenderSettings:
    env = {key.removeprefix("NOTI_").lower(): value for key, value in simulator.sender_env().items()}
    settings: dict[str, object] = {
        "credential": "default/test", "sender_health_port": 0, "sender_backoff_base": 0.05,
        "sender_backoff_max": 0.2, "sender_claim_idle_seconds": 2, **env, **overrides,
    }  # fmt: skip
    return Settings(**settings).sender  # type: ignore[arg-type]


async def test_notifications_are_sent_recorded_and_acked(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess
) -> None:
    tokens = [f"{i:064x}" for i in range(300)]
    enqueue(clean_db, clean_redis, apns_simulator, tokens, with_devices=True)
    await run_until_final(Sender(_config(apns_simulator)), clean_db, 300)
    assert statuses(clean_db) == {"sent": 300}
    with clean_db.connect() as connection:
        stamped = connection.execute(select(Device.last_notification_at)).scalars().all()
        apns_ids = connection.execute(select(Notification.apns_id, Notification.id)).all()
    assert all(stamp is not None for stamp in stamped)
    assert all(apns_id == str(record_id) for apns_id, record_id in apns_ids)  # apns-id is the record id
    assert apns_simulator.counters()["by_outcome"] == {"Success": 300}
    stream = stream_keys_of(apns_simulator).transactional_stream
    assert clean_redis.xlen(stream) == 0  # acked and removed
    assert clean_redis.xpending(stream, "senders")["pending"] == 0
    # Run by hand (no operator), the sender published that its credential serves the app.
    route = clean_redis.hget(ROUTES, f"sandbox:{apns_simulator.bundle_id}")
    assert (
        route
        == f"{stream_keys_of(apns_simulator).credential} {apns_simulator.team_id}.{apns_simulator.key_id}".encode()
    )


async def test_a_sender_whose_app_another_credential_serves_leaves_the_route_to_it(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess
) -> None:
    held = b"team-a/shop OTHERTEAM1.OTHERKEY01"
    clean_redis.hset(ROUTES, f"sandbox:{apns_simulator.bundle_id}", held)
    enqueue(clean_db, clean_redis, apns_simulator, ["ab" * 32], with_devices=True)
    await run_until_final(Sender(_config(apns_simulator)), clean_db, 1)
    assert statuses(clean_db) == {"sent": 1}  # its own queue is still served
    assert clean_redis.hget(ROUTES, f"sandbox:{apns_simulator.bundle_id}") == held


async def test_unregistered_and_bad_tokens_end_invalid_and_deactivate_devices(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess
) -> None:
    tokens = [f"{i:064x}" for i in range(1, 31)]
    apns_simulator.set_faults(unregistered=tokens[:10], bad_tokens=tokens[10:15])
    enqueue(clean_db, clean_redis, apns_simulator, tokens, with_devices=True)
    await run_until_final(Sender(_config(apns_simulator)), clean_db, 30)
    assert statuses(clean_db) == {"invalid_token": 15, "sent": 15}
    with clean_db.connect() as connection:
        inactive = set(connection.execute(select(Device.device_token).where(Device.is_active.is_(False))).scalars())
        reasons = dict(connection.execute(select(Notification.device_token, Notification.apns_reason)).all())
    assert inactive == set(tokens[:15])
    assert {reasons[t] for t in tokens[:10]} == {"Unregistered"} and {reasons[t] for t in tokens[10:15]} == {
        "BadDeviceToken"
    }


async def test_errors_and_goaways_are_retried_until_sent(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess
) -> None:
    apns_simulator.set_faults(rate_503=0.1, goaway_after=100)
    enqueue(clean_db, clean_redis, apns_simulator, [f"{i:064x}" for i in range(1000)])
    await run_until_final(Sender(_config(apns_simulator)), clean_db, 1000, seconds=90)
    assert statuses(clean_db) == {"sent": 1000}
    with clean_db.connect() as connection:
        retried = connection.execute(select(Notification.retry_count).where(Notification.retry_count > 0)).all()
    assert len(retried) >= 50  # about 10% met a 503 at least once
    assert apns_simulator.counters()["by_outcome"]["ServiceUnavailable"] >= 50


async def test_a_retried_notification_waits_in_the_retry_set_with_its_record_in_flight(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess
) -> None:
    apns_simulator.set_faults(rate_503=1.0)
    ids = enqueue(clean_db, clean_redis, apns_simulator, [f"{i:064x}" for i in range(1, 6)])
    credential = stream_keys_of(apns_simulator)
    sender = Sender(_config(apns_simulator, sender_backoff_base=60.0, sender_backoff_max=60.0))
    started = time.time()  # every retry is scheduled after this, however long a loaded machine takes
    task = asyncio.create_task(sender.run())
    try:
        for _ in range(300):
            if clean_redis.zcard(credential.retries) >= 5:
                break
            await asyncio.sleep(0.1)
    finally:
        sender.stop()
        await asyncio.wait_for(task, 30)

    # In flight: the record is not final, the entry has left the stream, its next attempt waits its turn.
    assert statuses(clean_db) == {"queued": 5}
    assert clean_redis.xlen(credential.transactional_stream) == 0
    assert clean_redis.xpending(credential.transactional_stream, "senders")["pending"] == 0
    waiting: list[tuple[bytes, float]] = clean_redis.zrange(credential.retries, 0, -1, withscores=True)  # type: ignore[assignment]
    retries = [(_retry_of(member), due) for member, due in waiting]
    assert sorted((retry.id, retry.attempt) for retry, _ in retries) == sorted((id, 1) for id in ids)
    assert all(due >= started + 25 for _, due in retries)  # a 60 s backoff waits half of it at least

    # Once due (here: made due now), the second attempt delivers it and the record says it was retried.
    apns_simulator.set_faults(rate_503=0.0)
    clean_redis.zadd(credential.retries, {member: 0 for member, _ in waiting})
    await run_until_final(Sender(_config(apns_simulator)), clean_db, 5)
    with clean_db.connect() as connection:
        rows = connection.execute(select(Notification.status, Notification.retry_count)).all()
    assert sorted(tuple(row) for row in rows) == [("sent", 1)] * 5
    assert clean_redis.zcard(credential.retries) == 0


def _retry_of(member: bytes) -> QueuedNotification:
    _stream, version, body, _nonce = member.split(b"\x1f")
    return QueuedNotification.decode({b"v": version, b"n": body})


async def test_exhausted_retries_end_failed_with_last_reason(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess
) -> None:
    apns_simulator.set_faults(rate_500=1.0)
    enqueue(clean_db, clean_redis, apns_simulator, [f"{i:064x}" for i in range(5)])
    await run_until_final(Sender(_config(apns_simulator, sender_max_attempts=3)), clean_db, 5)
    with clean_db.connect() as connection:
        rows = connection.execute(select(Notification.status, Notification.retry_count, Notification.apns_reason)).all()
    assert {tuple(row) for row in rows} == {("failed", 2, "InternalServerError")}


async def test_a_message_that_raises_ends_failed_and_acked_while_the_rest_of_its_read_is_sent(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess
) -> None:
    tokens = [f"{i:064x}" for i in range(1, 22)]
    good = enqueue(clean_db, clean_redis, apns_simulator, tokens[:10])
    # 64 bytes, within Apple's limit, but not ASCII: building the request's headers raises UnicodeEncodeError.
    [poison] = enqueue(clean_db, clean_redis, apns_simulator, tokens[10:11], content={"collapse_id": "é" * 32})
    good += enqueue(clean_db, clean_redis, apns_simulator, tokens[11:])
    await run_until_final(Sender(_config(apns_simulator)), clean_db, 21, seconds=15)
    with clean_db.connect() as connection:
        rows = {row.id: row for row in connection.execute(select(Notification))}
    assert (rows[poison].status, rows[poison].apns_reason) == ("failed", "Unsendable: UnicodeEncodeError")
    assert {rows[id].status for id in good} == {"sent"}
    assert apns_simulator.counters()["total"] == 20  # the poison never went out
    stream = stream_keys_of(apns_simulator).transactional_stream
    assert clean_redis.xlen(stream) == 0  # drained: nothing left to claim and raise again
    assert clean_redis.xpending(stream, "senders")["pending"] == 0


async def test_credential_failure_stops_sending_and_is_published(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    wrong_key = tmp_path / "wrong.p8"
    wrong_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    enqueue(clean_db, clean_redis, apns_simulator, [f"{i:064x}" for i in range(20)])
    sender = Sender(_config(apns_simulator, apns_key_file=wrong_key, sender_health_port=free_port()))
    task = asyncio.create_task(sender.run())
    for _ in range(100):
        if sender.credential_failure:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    # Not ready (a readiness probe takes it out), but alive: a restart would not fix the key.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sender.health_port}") as http:
        live, ready = await http.get("/healthz"), await http.get("/readyz")
    assert (live.status_code, ready.status_code) == (200, 503)
    assert ready.json()["credential_failure"] == "InvalidProviderToken"
    assert "BEGIN" not in ready.text and wrong_key.read_text()[30:60] not in ready.text
    sender.stop()
    await asyncio.wait_for(task, 30)
    status = clean_redis.hgetall(stream_keys_of(apns_simulator).status)
    assert (status[b"state"], status[b"reason"]) == (b"CredentialFailed", b"InvalidProviderToken")
    assert final_count(clean_db) == 0  # nothing recorded as failed: the notifications wait for a fixed credential
    assert apns_simulator.counters()["total"] <= 20
    stream = stream_keys_of(apns_simulator).transactional_stream
    assert clean_redis.xpending(stream, "senders")["pending"] + clean_redis.xlen(stream) >= 20


async def test_campaign_counters_follow_outcomes(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess
) -> None:
    import redis.asyncio as aioredis

    from noti.campaigns import CampaignSpec, fan_out
    from noti.store.db import make_engine

    tokens = [f"{i:064x}" for i in range(1, 41)]
    apns_simulator.set_faults(unregistered=tokens[:4])
    with clean_db.begin() as connection:
        rows = [{"app": apns_simulator.bundle_id, "device_token": t, "tags": []} for t in tokens]
        connection.execute(insert(Device), rows)
    manifest = {
        "apiVersion": "noti.dev/v1alpha1", "kind": "NotificationCampaign", "metadata": {"name": "c1"},
        "spec": {"credentialRef": {"name": "x"}, "notification": {"title": "Hi"}, "audience": {"allDevices": True}},
    }  # fmt: skip
    spec = CampaignSpec.from_manifest(manifest)
    aredis = aioredis.Redis(connection_pool=aioredis.ConnectionPool(**clean_redis.connection_pool.connection_kwargs))
    engine = make_engine(str(clean_db.url.render_as_string(hide_password=False)))
    await fan_out(engine, aredis, stream_keys_of(apns_simulator), spec, app=apns_simulator.bundle_id)
    await run_until_final(Sender(_config(apns_simulator)), clean_db, 40)
    await aredis.aclose()
    engine.dispose()
    with clean_db.connect() as connection:
        progress = CampaignProgress.parse(
            clean_redis.hgetall(campaign_counters("default/c1")), records.campaign_counts(connection, "default/c1")
        )
    assert (progress.by_status, progress.total) == ({"sent": 36, "invalid_token": 4, "failed": 0}, 40)


async def test_campaign_rate_limit_holds_when_the_sender_is_otherwise_idle(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess
) -> None:
    import time

    import redis.asyncio as aioredis

    from noti.campaigns import CampaignSpec, fan_out
    from noti.store.db import make_engine

    with clean_db.begin() as connection:
        rows = [{"app": apns_simulator.bundle_id, "device_token": f"{i:064x}", "tags": []} for i in range(1, 61)]
        connection.execute(insert(Device), rows)
    manifest = {
        "apiVersion": "noti.dev/v1alpha1", "kind": "NotificationCampaign", "metadata": {"name": "slow"},
        "spec": {"credentialRef": {"name": "x"}, "notification": {"title": "Hi"}, "audience": {"allDevices": True},
                 "ratePerSecond": 20},
    }  # fmt: skip
    aredis = aioredis.Redis(connection_pool=aioredis.ConnectionPool(**clean_redis.connection_pool.connection_kwargs))
    engine = make_engine(str(clean_db.url.render_as_string(hide_password=False)))
    await fan_out(
        engine,
        aredis,
        stream_keys_of(apns_simulator),
        CampaignSpec.from_manifest(manifest),
        app=apns_simulator.bundle_id,
    )
    await aredis.aclose()
    engine.dispose()
    started = time.monotonic()
    await run_until_final(Sender(_config(apns_simulator)), clean_db, 60)
    elapsed = time.monotonic() - started
    assert statuses(clean_db) == {"sent": 60}
    assert elapsed >= 1.8, f"60 notifications at 20/s (burst 20) took only {elapsed:.2f}s"


async def test_stop_returns_within_grace_when_the_database_is_away(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess
) -> None:
    import time

    from harness.procs import free_port
    from noti.store.db import make_engine

    enqueue(clean_db, clean_redis, apns_simulator, [f"{i:064x}" for i in range(1, 21)])
    unreachable = make_engine(f"postgresql+psycopg://noti@127.0.0.1:{free_port()}/noti")
    sender = Sender(_config(apns_simulator, sender_grace_period=2.0), engine=unreachable)
    task = asyncio.create_task(sender.run())
    for _ in range(100):
        if apns_simulator.counters()["total"] >= 20:
            break
        await asyncio.sleep(0.1)
    started = time.monotonic()
    sender.stop()
    await asyncio.wait_for(task, 30)
    unreachable.dispose()
    assert time.monotonic() - started < 2.0 + 1.5  # the grace period, and not a retry loop without end
    stream = stream_keys_of(apns_simulator).transactional_stream
    assert clean_redis.xpending(stream, "senders")["pending"] == 20  # unrecorded, so unacked: another sender's
    assert final_count(clean_db) == 0


async def test_slow_answers_are_not_claimed_back_and_sent_twice(
    sender_env: None, clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess
) -> None:
    apns_simulator.set_faults(latency_ms=2500.0)  # longer than the claim idle time below
    enqueue(clean_db, clean_redis, apns_simulator, [f"{i:064x}" for i in range(1, 21)])
    await run_until_final(Sender(_config(apns_simulator, sender_claim_idle_seconds=1)), clean_db, 20)
    assert statuses(clean_db) == {"sent": 20}
    assert set(apns_simulator.counters()["by_token"].values()) == {1}  # pending and idle, but still ours


async def test_sender_is_ready_when_it_can_deliver_and_not_while_redis_is_away(
    sender_env: None, apns_simulator: SimulatorProcess
) -> None:
    async def probe(sender: Sender) -> tuple[int, int, dict[str, object]]:
        task = asyncio.create_task(sender.run())
        try:
            await asyncio.sleep(1.5)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sender.health_port}") as http:
                live, ready = await http.get("/healthz/"), await http.get("/readyz")
            return live.status_code, ready.status_code, ready.json()
        finally:
            sender.stop()
            await asyncio.wait_for(task, 30)

    assert (await probe(Sender(_config(apns_simulator, sender_health_port=free_port()))))[:2] == (200, 200)

    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    live, ready, state = await probe(Sender(_config(apns_simulator, redis_url=nowhere, sender_health_port=free_port())))
    assert (live, ready) == (200, 503)
    assert "ConnectionError" in str(state["redis_failure"])
