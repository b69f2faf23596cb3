"""Delivering one stream entry: decode it, send it to APNs, and carry out the retry policy's decision — the
outcome to the recorder, the entry to the delayed-retry set, or the credential stopped.

A message that cannot be handled (it is not ours, or sending it raises) ends there: dead-lettered or
recorded failed, and acknowledged, never claimed and tried again forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from noti.apns.client import APNsClient, APNsResult
from noti.apns.payload import InvalidNotification, NotificationContent, build_payload, kept
from noti.queue import CONSUMER_GROUP, MessageError, QueuedNotification, StreamKeys, from_epoch_ms
from noti.sender.metrics import SenderMetrics
from noti.sender.outages import keep_trying
from noti.sender.policy import NOT_FOR_TOPIC, Finish, Limits, Retry, StopCredential, TopicEvidence, decide
from noti.sender.recorder import Finished, Recorder
from noti.sender.retry_set import retry_member
from noti.sender.topics import TopicStreak
from noti.store.records import RecordUpdate
from noti.store.tables import NotificationStatus, utcnow
from noti.tracing import DISABLED, Tracing

log = logging.getLogger(__name__)
# Trouble with Redis or the network is no fault of the message: it stays pending and is claimed again.
OUTAGES = (RedisError, OSError)
REASON_LENGTH = 64  # the record's apns_reason column
CONTENTS_KEPT = 256  # distinct contents whose payload is kept built (campaigns share one)
Parked = tuple[str, bytes, dict[bytes, bytes]]  # (stream, entry id, fields): an entry waiting for its credential


def invalidated_at(result: APNsResult) -> datetime | None:
    """When APNs says the device token stopped being valid (a 410's ``timestamp``, ms since the epoch)."""
    if result.timestamp is None or result.timestamp <= 0:
        return None
    return datetime.fromtimestamp(result.timestamp / 1000, UTC)


def unsendable_reason(error: BaseException) -> str:
    """The reason recorded for a notification whose delivery raised ``error``."""
    return f"Unsendable: {type(error).__name__}"[:REASON_LENGTH]


class Deliverer:
    """Delivers entries of one credential's streams; a task per entry, so each one's failure stays its own."""

    def __init__(
        self,
        client: APNsClient,
        redis: aioredis.Redis,
        queue: StreamKeys,
        recorder: Recorder,
        metrics: SenderMetrics,
        limits: Limits,
        on_credential_refused: Callable[[str, Parked], Awaitable[None]],
        *,
        tracing: Tracing = DISABLED,
    ) -> None:
        self._client, self._redis, self._queue = client, redis, queue
        self._tracing = tracing
        self._recorder, self._metrics, self._limits = recorder, metrics, limits
        self._on_credential_refused = on_credential_refused
        self.topic_streak = TopicStreak(limits.topic_guard.tokens)
        self._contents: dict[bytes, tuple[NotificationContent, bytes]] = {}

    async def deliver(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """Send the entry and see it through: finished, retried later, or left pending for a fixed credential."""
        try:
            message = QueuedNotification.decode(fields)
        except MessageError as exc:
            await self._dead_letter(stream, entry_id, fields, str(exc))
            return
        try:
            await self._attempt(stream, entry_id, message, fields)
        except OUTAGES:
            raise  # left pending: claimed and tried again once Redis or APNs is back
        except Exception as exc:
            # Something in this message breaks sending (a header that cannot be encoded, say): every
            # retry would raise again, so it ends here instead of coming back at each claim.
            reason = unsendable_reason(exc)
            log.warning("notification %s cannot be sent (%s: %.200s); recorded failed", message.id,
                        type(exc).__name__, exc)  # fmt: skip
            self._metrics.notifications.labels(NotificationStatus.FAILED.value, reason).inc()
            self._finish(stream, entry_id, message, NotificationStatus.FAILED, reason=reason)

    async def _attempt(
        self, stream: str, entry_id: bytes, message: QueuedNotification, fields: dict[bytes, bytes]
    ) -> None:
        try:
            content, payload = self._built(message.content)
        except InvalidNotification as exc:
            self._finish(stream, entry_id, message, NotificationStatus.FAILED, reason="InvalidNotification")
            log.warning("notification %s cannot be sent: %s", message.id, exc)
            return
        if self._tracing.enabled:
            result = await self._send_traced(message, content, payload)
        else:  # the hot path builds nothing for a tracer that is off
            result = await self._client.send(message.device_token, content, apns_id=message.id, payload=payload)
        self._metrics.latency.observe(result.latency)
        topic: TopicEvidence | None = None
        if result.ok:
            self.topic_streak.success()
        elif result.reason == NOT_FOR_TOPIC:
            topic = self.topic_streak.not_for_topic(message.device_token)
        match decide(result, message.attempt, self._limits, topic=topic):
            case Finish(status, reason):
                self._metrics.notifications.labels(status.value, reason).inc()
                if status is NotificationStatus.SENT:
                    self._observe_enqueue_to_sent(message, entry_id)
                self._finish(stream, entry_id, message, status, result=result)
            case StopCredential(reason):
                # The message stays pending and is sent once the credential is fixed.
                await self._on_credential_refused(reason, (stream, entry_id, fields))
            case Retry(delay, reason):
                self._metrics.notifications.labels("retried", reason).inc()
                member = retry_member(stream, message.next_attempt(entry_id), entry_id.decode())
                await self._retry_later(stream, entry_id, member, time.time() + delay)

    async def _send_traced(
        self, message: QueuedNotification, content: NotificationContent, payload: bytes
    ) -> APNsResult:
        # The sending request's span is the parent (its context came in the message): one trace per send.
        attributes = {"noti.notification.id": str(message.id), "noti.app": message.app, "noti.attempt": message.attempt}
        with self._tracing.span("noti.sender.deliver", parent=message.trace or {}, attributes=attributes) as span:
            result = await self._client.send(message.device_token, content, apns_id=message.id, payload=payload)
            span.set("apns.status_code", result.status_code)
            if result.reason:
                span.set("apns.reason", result.reason)
                span.error(result.reason)
        return result

    def _observe_enqueue_to_sent(self, message: QueuedNotification, entry_id: bytes) -> None:
        queued = message.queued_since(entry_id)
        if queued is not None:  # clocks of Redis and this pod may differ a little: never below zero
            waited = max(0.0, time.time() - queued / 1000)
            self._metrics.enqueue_to_sent.labels("campaign" if message.campaign else "transactional").observe(waited)

    def _built(self, values: dict[str, Any]) -> tuple[NotificationContent, bytes]:
        """The content and payload of ``values``, built once for all the entries that share them (a campaign's)."""
        key = orjson.dumps(values, option=orjson.OPT_SORT_KEYS)
        built = self._contents.get(key)
        if built is None:
            content = NotificationContent.from_dict(values)
            built = (content, build_payload(content))
            if len(self._contents) >= CONTENTS_KEPT:
                self._contents.clear()
            self._contents[kept(key)] = built
        return built

    async def _retry_later(self, stream: str, entry_id: bytes, member: str, due: float) -> None:
        async def schedule() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(self._queue.retries, {member: due})  # in the retry set before it leaves the stream
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
        outcome = RecordUpdate(
            id=message.id,
            status=status,
            retry_count=message.attempt,
            apns_id=result.apns_id if result else None,
            apns_reason=(result.reason if result else None) or reason,
            status_code=result.status_code or None if result else None,
            sent_at=utcnow() if status is NotificationStatus.SENT else None,
            apns_unique_id=result.apns_unique_id if result else None,
            invalidated_at=invalidated_at(result) if result and status is NotificationStatus.INVALID_TOKEN else None,
            created_at=from_epoch_ms(message.created_at) if message.created_at is not None else None,
        )
        self._recorder.add(Finished(stream, entry_id, outcome))

    async def _dead_letter(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes], error: str) -> None:
        log.error("entry %s of %s is not a notification this sender reads (%s); moved to %s", entry_id, stream, error,
                  self._queue.dead_letters)  # fmt: skip
        entry: dict[Any, Any] = {b"stream": stream, b"entry": entry_id, b"error": error, **fields}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._queue.dead_letters, entry)
            pipe.xack(stream, CONSUMER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()
