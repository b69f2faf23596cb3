"""Reading a credential's streams: its consumer groups, the fair roster of running campaigns, and one read
that serves transactional sends first and shares the rest among campaigns within their rates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from noti.queue import CONSUMER_GROUP, StreamKeys, campaign_fanout_cursor, campaign_settings
from noti.ratelimit import TokenBucket

BLOCK_MS = 1000  # how long a read with nothing to do waits for new entries
CAMPAIGN_REFRESH = 2.0  # seconds between looks at the credential's campaign set

Entry = tuple[str, bytes, dict[bytes, bytes]]  # (stream, entry id, fields)


def fair_order(campaigns: Sequence[str], turn: int) -> list[str]:
    """Campaigns in the order to serve them this turn: a rotation, so each gets its share first in turn."""
    if not campaigns:
        return []
    start = turn % len(campaigns)
    return [*campaigns[start:], *campaigns[:start]]


class CampaignRoster:
    """The credential's campaigns to read now (running, not suspended), each with its own rate bucket."""

    def __init__(self, redis: aioredis.Redis, engine: Engine, queue: StreamKeys) -> None:
        self._redis, self._engine, self._queue = redis, engine, queue
        self.buckets: dict[str, TokenBucket] = {}
        self.names: list[str] = []  # as of the last look
        self._looked_at = 0.0

    async def active(self) -> list[str]:
        """The campaigns to read, looked up again at most every ``CAMPAIGN_REFRESH`` seconds."""
        if time.monotonic() - self._looked_at < CAMPAIGN_REFRESH:
            return self.names
        self._looked_at = time.monotonic()
        members: set[bytes] = await self._redis.smembers(self._queue.campaigns)  # type: ignore[assignment]
        active = []
        for name in sorted(m.decode() for m in members):
            settings = await self._redis.hgetall(campaign_settings(name))
            if await self._finished(name):
                await self._redis.srem(self._queue.campaigns, name)
                continue
            if settings.get(b"suspend") == b"1":
                continue
            rate = float(settings.get(b"rate", 0) or 0)
            bucket = self.buckets.get(name)
            if bucket is None or bucket.rate != rate:
                self.buckets[name] = TokenBucket(self._redis, self._queue.campaign_rate_limit(name), rate)
            active.append(name)
        self.names = active
        return active

    async def _finished(self, name: str) -> bool:
        fanout = await self._redis.hget(campaign_fanout_cursor(name), "done")
        if fanout != b"1":
            return False
        # Imported here: the fan-out's module (audiences, Live Activity targets) is otherwise no sender's business.
        from noti.campaigns import progress

        try:
            done = await progress(self._engine, self._redis, name)
        except (DBAPIError, PoolTimeout):  # the store is away: read the campaign on, ask again at the next look
            return False
        return done.finished >= done.total


class StreamReader:
    """Reads new entries for one consumer of the credential's group, transactional sends first."""

    def __init__(self, redis: aioredis.Redis, engine: Engine, queue: StreamKeys, consumer: str) -> None:
        self._redis, self._queue, self._consumer = redis, queue, consumer
        self.roster = CampaignRoster(redis, engine, queue)
        self._groups: set[str] = set()
        self._turn = 0

    @property
    def streams(self) -> list[str]:
        """Every stream this reader reads: the transactional one and the active campaigns' (as last seen)."""
        return [self._queue.transactional_stream, *(self._queue.campaign_stream(c) for c in self.roster.names)]

    def forget_groups(self) -> None:
        """Make the groups again before the next read (Redis lost them, or may have: it restarted)."""
        self._groups.clear()

    async def _ensure_group(self, stream: str) -> None:
        if stream in self._groups:
            return
        try:
            await self._redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(stream)

    async def read(self, wanted: int) -> list[Entry]:
        """Up to ``wanted`` new entries; waits up to ``BLOCK_MS`` when there are none."""
        tx = self._queue.transactional_stream
        await self._ensure_group(tx)
        found: list[Entry] = []

        async def read(streams: dict[str, str], count: int, block: int | None = None) -> None:
            reply: Any = await self._redis.xreadgroup(
                CONSUMER_GROUP,
                self._consumer,
                streams,  # type: ignore[arg-type]
                count=count,
                block=block,
            )
            for stream, entries in reply or []:
                name = stream.decode() if isinstance(stream, bytes) else stream
                found.extend((name, entry_id, fields) for entry_id, fields in entries if fields)

        await read({tx: ">"}, wanted)  # transactional sends always go first
        campaigns = await self.roster.active()
        for name in campaigns:
            await self._ensure_group(self._queue.campaign_stream(name))
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
                grant = await self.roster.buckets[name].take(min(share, room))
                if grant.granted == 0:
                    block_ms = min(block_ms, max(10, int(grant.wait * 1000)))  # look again when tokens are back
                    continue
                stream, before = self._queue.campaign_stream(name), len(found)
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
