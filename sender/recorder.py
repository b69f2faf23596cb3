"""Outcomes → PostgreSQL in batches, then XACK: a message is acknowledged only once its record is durable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from noti.queue import CONSUMER_GROUP
from noti.sender.metrics import SenderMetrics
from noti.sender.outages import keep_trying
from noti.store import records
from noti.store.records import RecordUpdate
from noti.store.tables import NotificationStatus

log = logging.getLogger(__name__)
REFUSED = "RecordRefused"  # apns_reason of a record whose outcome the store would not take


@dataclass(frozen=True, slots=True)
class Finished:
    """A stream entry whose work is done: its outcome (None: nothing to write) and where to ack it."""

    stream: str
    entry_id: bytes
    outcome: RecordUpdate | None


class Recorder:
    """Collects outcomes and writes them in batches; survives database and Redis restarts by retrying."""

    def __init__(
        self,
        engine: Engine,
        redis: aioredis.Redis,
        metrics: SenderMetrics,
        *,
        batch_size: int,
        interval: float,
        on_acked: Callable[[], None] | None = None,
        finished_counter: str | None = None,
    ) -> None:
        self._engine, self._redis, self._metrics = engine, redis, metrics
        self._finished_counter = finished_counter  # INCRBY per acked batch: how fast the backlog drains
        self.batch_size, self.interval = batch_size, interval
        self._on_acked = on_acked
        self._buffer: list[Finished] = []
        self._unacked = 0
        self.holding: set[tuple[str, bytes]] = set()  # (stream, entry id) handed over and not yet acked
        self._full = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopped = False

    @property
    def unacked(self) -> int:
        """Entries handed over and not yet acknowledged (buffered or being written): part of the in-flight window."""
        return self._unacked

    def add(self, item: Finished) -> None:
        self._buffer.append(item)
        self._unacked += 1
        self.holding.add((item.stream, item.entry_id))
        if len(self._buffer) >= self.batch_size:
            self._full.set()

    async def run(self) -> None:
        """Flush every ``interval`` seconds, or sooner when a batch is full, until stopped."""
        while not self._stopped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.interval)
            self._full.clear()
            await self.flush()

    def stop(self) -> None:
        self._stopped = True
        self._full.set()

    async def flush(self) -> None:
        async with self._lock:
            while self._buffer:
                batch, self._buffer = self._buffer[: self.batch_size], self._buffer[self.batch_size :]
                await self._write([item.outcome for item in batch if item.outcome is not None])
                await self._ack(batch)
                self._unacked -= len(batch)
                self.holding.difference_update((item.stream, item.entry_id) for item in batch)
                if self._on_acked is not None:
                    self._on_acked()

    async def _write(self, outcomes: list[RecordUpdate]) -> None:
        if not outcomes:
            return
        # The database is away (restart, failover, hung: each attempt is bounded, see store.db.Bounds):
        # keep the batch, nothing is acked meanwhile.
        await keep_trying(
            lambda: asyncio.to_thread(self._apply, outcomes),
            (DBAPIError, PoolTimeout),
            f"writing {len(outcomes)} outcomes",
            detail=lambda exc: getattr(exc, "orig", exc),
        )
        self._metrics.batches.inc()

    def _apply(self, outcomes: list[RecordUpdate]) -> None:
        try:
            with self._engine.begin() as connection:
                records.apply_outcomes(connection, outcomes)
        except (DataError, IntegrityError, ProgrammingError):
            # Not an outage: the database refuses a row. Retrying the batch would stall every record
            # behind it, so each goes alone, and one refused even alone is closed as failed.
            for outcome in outcomes:
                self._apply_alone(outcome)

    def _apply_alone(self, outcome: RecordUpdate) -> None:
        try:
            with self._engine.begin() as connection:
                records.apply_outcomes(connection, [outcome])
        except (DataError, IntegrityError, ProgrammingError) as exc:
            log.error("the store refused the outcome of %s (%s): recording it as failed", outcome.id,
                      type(getattr(exc, "orig", exc)).__name__)  # fmt: skip
            with self._engine.begin() as connection:
                records.apply_outcomes(connection, [RecordUpdate(outcome.id, NotificationStatus.FAILED,
                                                            outcome.retry_count, apns_reason=REFUSED,
                                                            created_at=outcome.created_at)])  # fmt: skip

    async def _ack(self, batch: list[Finished]) -> None:
        """XACK and XDEL the batch's entries: safe to repeat, so a lost reply is simply retried.
        (Campaign progress is counted in the store, with the outcomes.)"""
        by_stream: dict[str, list[bytes]] = defaultdict(list)
        for item in batch:
            by_stream[item.stream].append(item.entry_id)

        async def ack() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                for stream, ids in by_stream.items():
                    pipe.xack(stream, CONSUMER_GROUP, *ids)
                    pipe.xdel(stream, *ids)  # acked entries are done: keep streams short
                if self._finished_counter:
                    pipe.incrby(self._finished_counter, len(batch))
                await pipe.execute()

        await keep_trying(ack, (RedisError,), f"acknowledging {len(batch)} entries")
