"""The send path: write delivery records, then add them to the credential's transactional stream.

Concurrent single sends are coalesced by a micro-batcher: whatever arrived while the previous
batch was being written goes out as one insert and one Redis call, and each request is
answered once both are done. Every send was checked and encoded alone before it joined a
batch; what can still fail in the store fails only its own send (see ``_write_batch``), and
a stream Redis refuses fails only the sends queued into it (see ``_queue``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence

import redis.asyncio as aioredis
import redis.exceptions
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from noti.gateway.batcher import Batcher
from noti.gateway.errors import ApiError
from noti.gateway.sends import Accepted, BulkResult, BulkSend, Send, StreamEntries, Written
from noti.gateway.writes import write_bulk, write_sends
from noti.queue import XADD_MANY, pack_entries
from noti.routes import Route, RouteTable
from noti.store import records
from noti.store.models import NotificationStatus
from noti.store.records import RecordUpdate


def _store_unavailable(exc: Exception) -> bool:
    """Whether the store itself failed (every send of the batch would), not one send's values."""
    return isinstance(exc, OperationalError | PoolTimeout) or bool(getattr(exc, "connection_invalidated", False))


def _outage(exc: Exception) -> bool:
    """Whether the store or Redis is away (or hung): a send waiting for the next batch would meet it too."""
    return _store_unavailable(exc) or isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)


def _refused(stream: str, exc: redis.exceptions.ResponseError) -> ApiError:
    # Not an outage (Redis answers) and not the client's doing: a stream key that is no stream, a script error.
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return ApiError(500, f"the queue refused this notification (stream {stream}: {reason}); it was not sent")


class Enqueuer:
    """Writes records and queues messages; single sends go through a micro-batcher."""

    def __init__(
        self,
        engine: Engine,
        redis: aioredis.Redis,
        *,
        batching: bool = True,
        batch_max: int = 500,
        on_queued: Callable[[int], None] | None = None,
        routes: RouteTable | None = None,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.routes = routes if routes is not None else RouteTable(redis)
        self.batching = batching
        self.on_queued = on_queued
        self._batcher: Batcher[Send, Accepted] = Batcher(
            self._write_and_queue, max_size=batch_max, name="noti-gateway-batcher", is_outage=_outage
        )
        self._xadd_many = redis.register_script(XADD_MANY)

    async def start(self) -> None:
        if self.batching:
            await self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop()

    async def send(self, send: Send) -> Accepted:
        """Write and queue one notification; raises ApiError when it cannot be sent."""
        if self._batcher.running:
            return await self._batcher.submit(send)
        [answer] = await self._write_and_queue([send])
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def send_bulk(self, bulk: BulkSend) -> BulkResult:
        """Write every record in one batch and queue them in one pipeline."""

        routes = await self.routes.current()

        def write() -> tuple[BulkResult, list[StreamEntries]]:
            with self.engine.begin() as connection:
                return write_bulk(connection, bulk, routes)

        result, entries = await asyncio.to_thread(write)
        refused = await self._queue(entries)
        if refused:  # all or nothing: every record of a bulk send is closed failed, none is sent
            await self._fail_records(entries)
            raise next(iter(refused.values()))
        return result

    async def queue(self, entries: list[StreamEntries]) -> None:
        """Queue entries of records already written (closing them as failed if Redis refuses)."""
        await self._queue(entries)

    async def _write_and_queue(self, sends: list[Send]) -> list[Accepted | Exception]:
        routes = await self.routes.current()
        written = await asyncio.to_thread(self._write_batch, sends, routes)
        refused = await self._queue(written.entries)
        if not refused:
            return written.answers
        await self._fail_records([queued for queued in written.entries if queued.stream in refused])
        by_id = {str(id): refused[queued.stream] for queued in written.entries if queued.stream in refused
                 for id in queued.ids}  # fmt: skip
        return [by_id.get(str(answer.id), answer) if isinstance(answer, Accepted) else answer
                for answer in written.answers]  # fmt: skip

    def _write_batch(self, sends: list[Send], routes: Mapping[str, Route]) -> Written:
        try:
            return self._write_in_transaction(sends, routes)
        except Exception as exc:
            if len(sends) == 1 or _store_unavailable(exc):
                raise
        # One send failed in a way its own checks did not foresee: write each alone, so only it fails.
        alone = Written(answers=[])
        for send in sends:
            try:
                written = self._write_in_transaction([send], routes)
            except Exception as exc:  # the others still go: those written before must be queued
                alone.answers.append(exc)
            else:
                alone.answers.extend(written.answers)
                alone.entries.extend(written.entries)
        return alone

    def _write_in_transaction(self, sends: Sequence[Send], routes: Mapping[str, Route]) -> Written:
        with self.engine.begin() as connection:
            return write_sends(connection, sends, routes)

    async def _queue(self, entries: list[StreamEntries]) -> dict[str, ApiError]:
        """Add the entries to their streams; the streams Redis refused (each one's error), none when all went in.

        Raises when Redis is away: then every record is closed failed first.
        """
        if not entries:
            return {}
        try:
            if len(entries) == 1:  # the usual case; a pipeline would first ask whether the script is loaded
                try:
                    await self._xadd_many(keys=[entries[0].stream], args=[pack_entries(entries[0].entries)])
                except redis.exceptions.ResponseError as exc:
                    return {entries[0].stream: _refused(entries[0].stream, exc)}
                results: list[object] = [None]
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for queued in entries:
                        await self._xadd_many(keys=[queued.stream], args=[pack_entries(queued.entries)], client=pipe)
                    results = await pipe.execute(raise_on_error=False)
        except Exception:
            # The records exist but no sender will see them: close them as failed, so stats and
            # history tell the truth, and let the caller know (503).
            await self._fail_records(entries)
            raise
        # Each stream's entries went in or not on their own: a refused stream fails only its sends.
        refused = {
            queued.stream: _refused(queued.stream, result)
            for queued, result in zip(entries, results, strict=True)
            if isinstance(result, redis.exceptions.ResponseError)
        }
        if self.on_queued is not None:
            self.on_queued(sum(len(queued.ids) for queued in entries if queued.stream not in refused))
        return refused

    async def _fail_records(self, entries: list[StreamEntries]) -> None:
        outcomes = [
            RecordUpdate(uuid.UUID(str(id)), NotificationStatus.FAILED, apns_reason="QueueUnavailable")
            for queued in entries
            for id in queued.ids
        ]
        await asyncio.to_thread(self._fail, outcomes)

    def _fail(self, outcomes: list[RecordUpdate]) -> None:
        with self.engine.begin() as connection:
            records.apply_outcomes(connection, outcomes)
