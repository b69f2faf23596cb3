"""The sender: a credential's Redis streams → APNs → delivery records, at-least-once, nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import Engine

from noti import campaigns
from noti.apns.client import APNsClient, APNsResult, client_ssl_context
from noti.apns.payload import InvalidNotification, NotificationContent, build_payload
from noti.apns.reasons import Outcome as APNsOutcome
from noti.apns.tokens import ProviderTokens, load_signing_key
from noti.queue import (
    CONSUMER_GROUP,
    MessageError,
    QueuedNotification,
    campaign_fanout_cursor,
    campaign_settings,
)
from noti.ratelimit import TokenBucket
from noti.sender.config import SenderConfig
from noti.sender.health import HealthServer
from noti.sender.metrics import SenderMetrics
from noti.sender.outages import keep_trying
from noti.sender.recorder import Finished, Recorder
from noti.sender.retry import RetryQueue, backoff_delay, retry_member
from noti.settings import get_settings
from noti.store import records
from noti.store.db import make_engine
from noti.store.models import NotificationStatus, utcnow
from noti.store.records import Outcome

log = logging.getLogger(__name__)
READ_CHUNK = 500
BLOCK_MS = 1000
REDIS_CONNECTIONS = 64
CAMPAIGN_REFRESH = 2.0  # seconds between looks at the credential's campaign set
LIVENESS_SECONDS = 60.0  # a read loop that has not turned for this long is stuck: /healthz fails


def _record_id(fields: dict[bytes, bytes]) -> uuid.UUID | None:
    """The record id of a stream entry, or None when it is not a message we read (it goes to dead letters)."""
    try:
        return QueuedNotification.decode(fields).id
    except MessageError:
        return None


class SenderError(RuntimeError):
    """The sender cannot start; the message says what to fix."""


def final_status(outcome: APNsOutcome) -> NotificationStatus | None:
    """The record status an APNs outcome ends in, or None when it does not end the notification."""
    return {
        APNsOutcome.SUCCESS: NotificationStatus.SENT,
        APNsOutcome.INVALID_TOKEN: NotificationStatus.INVALID_TOKEN,
        APNsOutcome.PERMANENT: NotificationStatus.FAILED,
    }.get(outcome)


def fair_order(campaigns: Sequence[str], turn: int) -> list[str]:
    """Campaigns in the order to serve them this turn: a rotation, so each gets its share first in turn."""
    if not campaigns:
        return []
    start = turn % len(campaigns)
    return [*campaigns[start:], *campaigns[:start]]


def build_client(config: SenderConfig, redis: aioredis.Redis | None) -> APNsClient:
    """The APNs client of the configured credential, its provider token shared through ``redis``."""
    ssl_context = client_ssl_context(
        ca_file=config.apns_ca_file,
        **(
            {"p12_file": config.apns_cert_file, "p12_password": (config.apns_cert_password or "").encode() or None}
            if config.apns_cert_file and config.apns_cert_file.suffix == ".p12"
            else {"cert_file": config.apns_cert_file}
        ),
    )
    tokens = None
    if config.apns_cert_file is None:
        assert config.apns_key_file is not None
        try:
            key = load_signing_key(config.apns_key_file.read_bytes())
        except OSError as exc:
            raise SenderError(f"cannot read the APNs key file {config.apns_key_file}: {exc.strerror}") from None
        tokens = ProviderTokens(
            key, config.apns_key_id, config.apns_team_id, redis=redis, redis_key=config.queue.provider_token
        )
    return APNsClient(
        config.apns_topic,
        environment=config.apns_environment,
        endpoint=config.apns_endpoint,
        tokens=tokens,
        ssl_context=ssl_context,
        connections=config.sender_connections,
    )


class Sender:
    """Serves one credential until :meth:`stop`; embeddable (``noti dev``) or run by ``noti sender``."""

    def __init__(
        self,
        config: SenderConfig,
        *,
        engine: Engine | None = None,
        redis: aioredis.Redis | None = None,
        client: APNsClient | None = None,
        metrics: SenderMetrics | None = None,
    ) -> None:
        problems = config.problems()
        if problems:
            raise SenderError("; ".join(problems))
        settings = get_settings()
        self.config = config
        self.queue = config.queue
        self._owns = (engine is None, redis is None, client is None)
        self.engine = engine or make_engine(settings.database_url, pool_size=settings.database_pool_size)
        # A blocking pool: a thousand deliveries at once (all asking for the provider token at start,
        # or scheduling retries) wait for a connection instead of failing with "Too many connections".
        self.redis = redis or aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=REDIS_CONNECTIONS,
                timeout=30,
                socket_timeout=10,
                socket_connect_timeout=5,
                health_check_interval=10,
            )
        )
        self.client = client or build_client(config, self.redis)
        self.metrics = metrics or SenderMetrics()
        self._slot = asyncio.Event()
        self.recorder = Recorder(
            self.engine,
            self.redis,
            self.metrics,
            batch_size=config.sender_batch_size,
            interval=config.sender_batch_interval,
            on_acked=self._slot.set,
        )
        self.retries = RetryQueue(self.redis, self.queue.retries)
        self.bucket = TokenBucket(self.redis, self.queue.rate_limit, config.sender_rate_per_second)
        self._campaign_buckets: dict[str, TokenBucket] = {}
        self._campaigns: list[str] = []
        self._campaigns_at = 0.0
        self._groups: set[str] = set()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._sending: dict[asyncio.Task[None], tuple[str, bytes]] = {}  # in-flight task -> its entry
        self._stopping = asyncio.Event()
        self._stop_at: float | None = None
        self.credential_failure: str | None = None
        self.redis_failure: str | None = None  # why the last read of the streams failed, until one succeeds
        self._beat = time.monotonic()  # the read loop's last turn: a loop that stopped turning is not alive
        self.health_port: int | None = None
        self._turn = 0

    # lifecycle
    def stop(self) -> None:
        """Stop reading, drain what is in flight, write and ack, then return from :meth:`run`."""
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        self._stopping.set()
        self._slot.set()

    async def run(self) -> None:
        health = HealthServer(self.metrics.registry, self.status)
        if self.config.sender_health_port:
            self.health_port = await health.start("0.0.0.0", self.config.sender_health_port)
        await self._publish_status("Ready", "")
        background = [
            asyncio.create_task(self.recorder.run(), name="recorder"),
            asyncio.create_task(self._move_retries(), name="retries"),
            asyncio.create_task(self._claim_abandoned(), name="claimer"),
            asyncio.create_task(self._watch_backlog(), name="backlog"),
        ]
        log.info(
            "sender for %s (%s) started as %s", self.config.credential, self.queue.tag, self.config.sender_consumer
        )
        try:
            await self._read_loop()
        finally:
            # The grace period counts from stop(): requests get most of it, the last write and ack the rest.
            deadline = (self._stop_at or time.monotonic()) + self.config.sender_grace_period
            reserve = min(5.0, self.config.sender_grace_period / 4)
            await self._drain(deadline - reserve - time.monotonic())
            for task in background:
                if task.get_name() == "recorder":
                    continue
                task.cancel()
            self.recorder.stop()
            try:
                await asyncio.wait_for(self._final_flush(background), max(0.5, deadline - time.monotonic()))
            except TimeoutError:
                # Not written (the database or Redis is away): the entries stay pending, another sender claims them.
                log.warning("grace period over with %d outcomes unacknowledged", self.recorder.unacked)
            await health.stop()
            await self._close()

    async def _final_flush(self, background: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*background, return_exceptions=True)
        await self.recorder.flush()

    async def _drain(self, seconds: float) -> None:
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=max(0.0, seconds))
            for task in pending:  # their messages stay pending in Redis: another sender claims them
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _close(self) -> None:
        owns_engine, owns_redis, owns_client = self._owns
        if owns_client:
            await self.client.aclose()
        if owns_redis:
            await self.redis.aclose()
        if owns_engine:
            self.engine.dispose()

    def status(self) -> dict[str, Any]:
        """What /healthz (``live``: restart me if false) and /readyz (``ready``: I can deliver) answer.

        A wrong credential or an unreachable Redis makes the sender not ready, but still alive:
        a restart would not fix either, and it recovers by itself once they are fixed.
        """
        return {
            "live": time.monotonic() - self._beat < LIVENESS_SECONDS,
            "ready": self.credential_failure is None and self.redis_failure is None,
            "credential": self.config.credential,
            "in_flight": len(self._in_flight),
            "credential_failure": self.credential_failure,
            "redis_failure": self.redis_failure,
        }

    async def _publish_status(self, state: str, reason: str) -> None:
        with contextlib.suppress(RedisError):
            await self.redis.hset(
                self.queue.status, mapping={"state": state, "reason": reason, "at": utcnow().isoformat()}
            )

    # reading
    async def _ensure_group(self, stream: str) -> None:
        if stream in self._groups:
            return
        try:
            await self.redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(stream)

    async def _active_campaigns(self) -> list[str]:
        if time.monotonic() - self._campaigns_at < CAMPAIGN_REFRESH:
            return self._campaigns
        self._campaigns_at = time.monotonic()
        members: set[bytes] = await self.redis.smembers(self.queue.campaigns)  # type: ignore[assignment]
        names = sorted(m.decode() for m in members)
        active = []
        for name in names:
            settings = await self.redis.hgetall(campaign_settings(name))
            if await self._campaign_finished(name):
                await self.redis.srem(self.queue.campaigns, name)
                continue
            if settings.get(b"suspend") == b"1":
                continue
            rate = float(settings.get(b"rate", 0) or 0)
            bucket = self._campaign_buckets.get(name)
            if bucket is None or bucket.rate != rate:
                self._campaign_buckets[name] = TokenBucket(self.redis, self.queue.campaign_rate_limit(name), rate)
            await self._ensure_group(self.queue.campaign_stream(name))
            active.append(name)
        self._campaigns = active
        return active

    async def _campaign_finished(self, name: str) -> bool:
        fanout = await self.redis.hget(campaign_fanout_cursor(name), "done")
        if fanout != b"1":
            return False
        done = await campaigns.progress(self.engine, self.redis, name)
        return done.finished >= done.total

    async def _read(self, wanted: int) -> list[tuple[str, bytes, dict[bytes, bytes]]]:
        tx = self.queue.transactional_stream
        await self._ensure_group(tx)
        found: list[tuple[str, bytes, dict[bytes, bytes]]] = []

        async def read(streams: dict[str, str], count: int, block: int | None = None) -> None:
            reply: Any = await self.redis.xreadgroup(
                CONSUMER_GROUP,
                self.config.sender_consumer,
                streams,  # type: ignore[arg-type]
                count=count,
                block=block,
            )
            for stream, entries in reply or []:
                name = stream.decode() if isinstance(stream, bytes) else stream
                found.extend((name, entry_id, fields) for entry_id, fields in entries if fields)

        await read({tx: ">"}, wanted)  # transactional sends always go first
        campaigns = await self._active_campaigns()
        remaining = wanted - len(found)
        hungry: dict[str, int] = {}  # campaign stream -> tokens taken this turn that found its stream empty
        block_ms = BLOCK_MS
        if remaining > 0 and campaigns:
            self._turn += 1
            share = max(1, remaining // len(campaigns))
            for name in fair_order(campaigns, self._turn):
                room = wanted - len(found)
                if room <= 0:
                    break
                grant = await self._campaign_buckets[name].take(min(share, room))
                if grant.granted == 0:
                    block_ms = min(block_ms, max(10, int(grant.wait * 1000)))  # look again when tokens are back
                    continue
                stream, before = self.queue.campaign_stream(name), len(found)
                await read({stream: ">"}, grant.granted)
                if len(found) == before:
                    hungry[stream] = grant.granted
        if not found:
            # XREADGROUP's COUNT is per stream: a campaign may only take what its bucket granted above
            # (unused, its stream was empty), and all of them together no more than the window's room.
            streams = {tx: ">", **dict.fromkeys(hungry, ">")}
            count = max(1, min(wanted // len(streams), *hungry.values()) if hungry else wanted)
            started = time.monotonic()
            await read(streams, count, block_ms)
            if not found and time.monotonic() - started < block_ms / 2000:
                await asyncio.sleep(0.05)  # a server that does not block (the embedded one) must not spin us
        return found

    async def _read_loop(self) -> None:
        while not self._stopping.is_set():
            self._beat = time.monotonic()
            if self.credential_failure is not None:
                await asyncio.sleep(1)
                continue
            free = self._free()
            if free <= 0:
                self._slot.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot.wait(), 1)
                continue
            try:
                wanted = (await self.bucket.take(min(free, READ_CHUNK))).granted
                if wanted == 0:
                    await asyncio.sleep(0.02)
                    continue
                entries = await self._read(wanted)
                self.redis_failure = None
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost the group (restarted without its data): make it again
                    self._groups.clear()
                    continue
                raise
            except (RedisError, OSError) as exc:
                log.warning("reading the streams failed, retrying: %s", exc)
                self.redis_failure = f"{type(exc).__name__}: {exc}"
                self._groups.clear()
                await asyncio.sleep(1)
                continue
            for stream, entry_id, fields in entries:
                self._spawn(stream, entry_id, fields)

    def _free(self) -> int:
        """Room left in the in-flight window: read and not yet acknowledged, whether sending or being recorded.

        The window bounds what a crash makes another sender send again, so it counts outcomes the
        recorder still holds, not only requests waiting for APNs.
        """
        return self.config.sender_concurrency - len(self._in_flight) - self.recorder.unacked

    def _spawn(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        task = asyncio.create_task(self._deliver(stream, entry_id, fields))
        self._in_flight.add(task)
        self._sending[task] = (stream, entry_id)
        self.metrics.in_flight.set(len(self._in_flight))
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._sending.pop(task, None)
        self.metrics.in_flight.set(len(self._in_flight))
        self._slot.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivering a notification failed unexpectedly", exc_info=task.exception())

    # delivering
    async def _deliver(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            message = QueuedNotification.decode(fields)
        except MessageError as exc:
            await self._dead_letter(stream, entry_id, fields, str(exc))
            return
        try:
            content = NotificationContent.from_dict(message.content)
            payload = build_payload(content)
        except InvalidNotification as exc:
            self._finish(stream, entry_id, message, NotificationStatus.FAILED, reason="InvalidNotification")
            log.warning("notification %s cannot be sent: %s", message.id, exc)
            return
        result = await self.client.send(message.device_token, content, apns_id=message.id, payload=payload)
        self.metrics.latency.observe(result.latency)
        await self._handle(stream, entry_id, message, result)

    def _final_ids(self, ids: list[Any]) -> set[Any]:
        with self.engine.connect() as connection:
            return records.final_ids(connection, ids)

    async def _handle(self, stream: str, entry_id: bytes, message: QueuedNotification, result: APNsResult) -> None:
        status = final_status(result.outcome)
        reason = result.reason or ("Success" if result.ok else "Unknown")
        if status is not None:
            self.metrics.notifications.labels(status.value, reason).inc()
            self._finish(stream, entry_id, message, status, result=result)
            return
        if result.outcome is APNsOutcome.CREDENTIAL:
            # Stop this credential's traffic; the message stays pending and is sent once the credential is fixed.
            if self.credential_failure is None:
                self.credential_failure = reason
                log.error("APNs refused credential %s: %s; sending stopped", self.config.credential, reason)
                await self._publish_status("CredentialFailed", reason)
            return
        if message.attempt + 1 >= self.config.sender_max_attempts:
            self.metrics.notifications.labels("failed", reason).inc()
            self._finish(stream, entry_id, message, NotificationStatus.FAILED, result=result)
            return
        self.metrics.notifications.labels("retried", reason).inc()
        delay = backoff_delay(
            message.attempt, result.retry_after, self.config.sender_backoff_base, self.config.sender_backoff_max
        )
        member = retry_member(stream, message.next_attempt(), entry_id.decode())
        await self._retry_later(stream, entry_id, member, time.time() + delay)

    async def _retry_later(self, stream: str, entry_id: bytes, member: str, due: float) -> None:
        async def schedule() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zadd(self.queue.retries, {member: due})  # in the retry set before it leaves the stream
                pipe.xack(stream, CONSUMER_GROUP, entry_id)
                pipe.xdel(stream, entry_id)
                await pipe.execute()

        await keep_trying(schedule, (RedisError,), "scheduling a retry")

    def _finish(
        self,
        stream: str,
        entry_id: bytes,
        message: QueuedNotification,
        status: NotificationStatus,
        *,
        result: APNsResult | None = None,
        reason: str | None = None,
    ) -> None:
        outcome = Outcome(
            id=message.id,
            status=status,
            retry_count=message.attempt,
            apns_id=result.apns_id if result else None,
            apns_reason=(result.reason if result else None) or reason,
            status_code=result.status_code or None if result else None,
            sent_at=utcnow() if status is NotificationStatus.SENT else None,
        )
        self.recorder.add(Finished(stream, entry_id, outcome))

    async def _dead_letter(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes], error: str) -> None:
        log.error("entry %s of %s is not a notification this sender reads (%s); moved to %s", entry_id, stream, error,
                  self.queue.dead_letters)  # fmt: skip
        entry: dict[Any, Any] = {b"stream": stream, b"entry": entry_id, b"error": error, **fields}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.queue.dead_letters, entry)
            pipe.xack(stream, CONSUMER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()

    # background duties
    async def _move_retries(self) -> None:
        while True:
            try:
                moved = await self.retries.move_due(time.time())
                self.metrics.retries_waiting.set(await self.redis.zcard(self.queue.retries))
            except (RedisError, OSError):
                moved = 0
            await asyncio.sleep(0.05 if moved else 0.5)

    async def _claim_abandoned(self) -> None:
        idle_ms = int(self.config.sender_claim_idle_seconds * 1000)
        while True:
            await asyncio.sleep(max(0.5, self.config.sender_claim_idle_seconds / 2))
            if self._stopping.is_set() or self.credential_failure is not None:
                continue
            streams = [self.queue.transactional_stream, *(self.queue.campaign_stream(c) for c in self._campaigns)]
            for stream in streams:
                with contextlib.suppress(RedisError, OSError):
                    await self._claim(stream, idle_ms)

    async def _claim(self, stream: str, idle_ms: int) -> None:
        start: Any = "0-0"
        while not self._stopping.is_set():
            chunk = min(100, self.config.sender_concurrency)  # a window under 100 must not wait forever
            while self._free() < chunk:
                self._slot.clear()
                await self._slot.wait()
            reply = await self.redis.xautoclaim(
                stream, CONSUMER_GROUP, self.config.sender_consumer, idle_ms, start_id=start, count=chunk
            )
            start, entries = reply[0], reply[1]
            # Entries this sender still works on (a slow APNs answer, a batch waiting for the database) go
            # idle too: claiming them from ourselves would send them twice.
            held = {*self._sending.values(), *self.recorder.holding}
            claimed = [(entry_id, fields) for entry_id, fields in entries if fields and (stream, entry_id) not in held]
            # A reclaimed entry whose record is already final was sent: ack it, never send it again
            # (one query for the whole chunk).
            ids = {entry_id: _record_id(fields) for entry_id, fields in claimed}
            final = await asyncio.to_thread(self._final_ids, [i for i in ids.values() if i is not None])
            for entry_id, fields in claimed:
                if ids[entry_id] in final:
                    self.recorder.add(Finished(stream, entry_id, None))
                else:
                    self._spawn(stream, entry_id, fields)
            if start in (b"0-0", "0-0") or not entries:
                return

    async def _watch_backlog(self) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):
                for stream in [
                    self.queue.transactional_stream,
                    *(self.queue.campaign_stream(c) for c in self._campaigns),
                ]:
                    self.metrics.backlog.labels(stream).set(await self.redis.xlen(stream))
            await asyncio.sleep(5)
