"""Claiming abandoned entries: what a dead sender left pending is taken over (XAUTOCLAIM), and an entry whose
record is already final was sent before it died, so it is acknowledged, never sent again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import Engine

from noti.queue import CONSUMER_GROUP, MessageError, QueuedNotification, from_epoch_ms
from noti.store import records

PAGE = 100  # entries claimed per XAUTOCLAIM call at most


def _record(fields: dict[bytes, bytes]) -> QueuedNotification | None:
    """A stream entry's message, or None when it is not a message we read (it goes to dead letters)."""
    try:
        return QueuedNotification.decode(fields)
    except MessageError:
        return None


@dataclass(frozen=True, slots=True)
class ClaimedPage:
    """One XAUTOCLAIM page of a stream, sorted out."""

    to_send: list[tuple[bytes, dict[bytes, bytes]]]  # (entry id, fields): deliver these
    already_final: list[bytes]  # entry ids whose record is final: ack these, do not send them again
    next_start: Any  # where the next page starts
    last: bool  # the scan of the stream is complete


class Claimer:
    """Takes over entries of the credential's group that have been pending longer than ``idle_seconds``."""

    def __init__(self, redis: aioredis.Redis, engine: Engine, consumer: str, idle_seconds: float) -> None:
        self._redis, self._engine, self._consumer = redis, engine, consumer
        self.idle_seconds = idle_seconds

    async def claim(
        self, stream: str, start: Any, count: int, holding: Callable[[], Container[tuple[str, bytes]]]
    ) -> ClaimedPage:
        """Claim up to ``count`` idle entries of ``stream`` from ``start`` on ("0-0": the beginning).

        ``holding()`` tells the (stream, entry id) this sender still works on, asked once XAUTOCLAIM has
        answered: a slow APNs answer or a batch waiting for the database goes idle too, and claiming it
        from ourselves would send it twice.
        """
        reply = await self._redis.xautoclaim(
            stream, CONSUMER_GROUP, self._consumer, int(self.idle_seconds * 1000), start_id=start, count=count
        )
        next_start, entries = reply[0], reply[1]
        held = holding()
        claimed = [(entry_id, fields) for entry_id, fields in entries if fields and (stream, entry_id) not in held]
        messages = {entry_id: _record(fields) for entry_id, fields in claimed}
        ids = {entry_id: message.id if message else None for entry_id, message in messages.items()}
        dated = {m.id: from_epoch_ms(m.created_at) for m in messages.values() if m and m.created_at is not None}
        final = await asyncio.to_thread(self._final_ids, [i for i in ids.values() if i is not None], dated)
        return ClaimedPage(
            to_send=[(entry_id, fields) for entry_id, fields in claimed if ids[entry_id] not in final],
            already_final=[entry_id for entry_id, _ in claimed if ids[entry_id] in final],
            next_start=next_start,
            last=next_start in (b"0-0", "0-0") or not entries,
        )

    def _final_ids(self, ids: list[uuid.UUID], created_at: dict[uuid.UUID, datetime]) -> set[uuid.UUID]:
        with self._engine.connect() as connection:  # one query (two when some messages are undated)
            return records.final_ids(connection, ids, created_at)
