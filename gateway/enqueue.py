"""The send path: write delivery records, then add them to the credential's transactional stream.

Concurrent single sends are coalesced by a micro-batcher: whatever arrived while the previous
batch was being written goes out as one insert and one Redis call, and each request is
answered once both are done. Every send was checked and encoded alone before it joined a
batch; what can still fail in the store fails only its own send (see ``_write_batch``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence

import redis.asyncio as aioredis
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from noti.gateway.batcher import Batcher
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
            self._write_and_queue, max_size=batch_max, name="noti-gateway-batcher"
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
        await self._queue(entries)
        return result

    async def _write_and_queue(self, sends: list[Send]) -> list[Accepted | Exception]:
        routes = await self.routes.current()
        written = await asyncio.to_thread(self._write_batch, sends, routes)
        await self._queue(written.entries)
        return written.answers

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

    async def _queue(self, entries: list[StreamEntries]) -> None:
        if not entries:
            return
        try:
            if len(entries) == 1:  # the usual case; a pipeline would first ask whether the script is loaded
                await self._xadd_many(keys=[entries[0].stream], args=[pack_entries(entries[0].entries)])
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for queued in entries:
                        await self._xadd_many(keys=[queued.stream], args=[pack_entries(queued.entries)], client=pipe)
                    await pipe.execute()
        except Exception:
            # The records exist but no sender will see them: close them as failed, so stats and
            # history tell the truth, and let the caller know (503).
            outcomes = [
                RecordUpdate(uuid.UUID(str(id)), NotificationStatus.FAILED, apns_reason="QueueUnavailable")
                for queued in entries
                for id in queued.ids
            ]
            await asyncio.to_thread(self._fail, outcomes)
            raise
        if self.on_queued is not None:
            self.on_queued(sum(len(queued.ids) for queued in entries))

    def _fail(self, outcomes: list[RecordUpdate]) -> None:
        with self.engine.begin() as connection:
            records.apply_outcomes(connection, outcomes)
