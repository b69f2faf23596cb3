"""Channel requests: the gateway asks, a sender of the credential carries them out with its key, and answers.

The gateway holds no APNs key, so channel management and broadcasts travel through Redis to a
sender of the credential: the gateway pushes a request onto the credential's
``channel_requests`` list and waits on ``channel_reply(id)``; a sender pops it, calls APNs
(:mod:`noti.apns.channels`) and pushes the answer back. A request carries a deadline: one
that waited longer (no sender was up) is dropped unanswered rather than done late, so a
client that gave up never finds a channel it did not get the id of.

A broadcast shares the credential's rate limit with its other traffic, is retried with the
sender's backoff while APNs is busy or unreachable (within its deadline), and its one
delivery record is written here, with APNs' last answer, whether or not the gateway still waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import Engine

from noti.apns.channels import ChannelAnswer, ChannelClient
from noti.apns.tokens import ProviderTokens
from noti.channel_requests import REPLY_TTL, ChannelRequest, encode_answer
from noti.queue import StreamKeys
from noti.ratelimit import TokenBucket
from noti.sender.policy import backoff_delay
from noti.store.channels import record_broadcast

log = logging.getLogger(__name__)
BROADCAST_ATTEMPTS = 4


class ChannelAgent:
    """Serves the credential's channel requests: one at a time per request, many at once."""

    def __init__(
        self,
        client: ChannelClient,
        redis: aioredis.Redis,
        engine: Engine,
        keys: StreamKeys,
        *,
        tokens: Callable[[], ProviderTokens | None],
        bucket: TokenBucket | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        self.client, self.redis, self.engine, self.keys = client, redis, engine, keys
        self._tokens = tokens
        self.bucket = bucket
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self._tasks: set[asyncio.Task[None]] = set()
        self.served = 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Pop requests until ``stopping`` is set; those in progress finish."""
        while not stopping.is_set():
            try:
                popped = await self.redis.brpop([self.keys.channel_requests], timeout=1)
            except (RedisError, OSError) as exc:
                log.warning("channel requests: cannot read from Redis (%s); trying again", exc)
                await asyncio.sleep(1)
                continue
            if not popped:
                continue
            try:
                request = ChannelRequest.parse(popped[1])
            except ValueError as exc:
                log.warning("channel requests: dropped one that cannot be read (%s)", exc)
                continue
            task = asyncio.create_task(self.serve(request), name=f"channel-{request.op}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def serve(self, request: ChannelRequest) -> None:
        """Carry one request out and answer it (unless it came too late to be done)."""
        if time.time() > request.deadline:
            log.info("channel requests: dropped a %s that waited past its deadline", request.op)
            return
        answer = await self.carry_out(request)
        self.served += 1
        with contextlib.suppress(RedisError, OSError):
            reply = self.keys.channel_reply(request.id)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(reply, encode_answer(answer))
                pipe.expire(reply, REPLY_TTL)
                await pipe.execute()

    async def carry_out(self, request: ChannelRequest) -> ChannelAnswer:
        self.client.tokens = self._tokens()  # the sender's, as reloaded after a key rotation
        if request.op == "create":
            return await self.client.create(int(request.storage_policy or 0))
        if request.op == "read":
            return await self.client.read(request.channel_id or "")
        if request.op == "list":
            return await self.client.list()
        if request.op == "delete":
            return await self.client.delete(request.channel_id or "")
        return await self._broadcast(request)

    async def _broadcast(self, request: ChannelRequest) -> ChannelAnswer:
        payload = orjson.dumps(request.payload or {})
        attempt = 0
        while True:
            if self.bucket is not None:
                grant = await self.bucket.take(1, partial=False)
                if not grant.granted:
                    await asyncio.sleep(grant.wait)
                    continue
            answer = await self.client.broadcast(
                request.channel_id or "", payload, priority=request.priority, expiration=request.expiration,
                request_id=request.id,
            )  # fmt: skip
            attempt += 1
            delay = backoff_delay(attempt - 1, 0.0, self.backoff_base, self.backoff_max)
            if not answer.retryable or attempt >= BROADCAST_ATTEMPTS or time.time() + delay > request.deadline:
                break
            await asyncio.sleep(delay)
        await asyncio.to_thread(
            record_broadcast, self.engine, id=uuid.UUID(request.id), app=self.client.bundle_id,
            channel_id=request.channel_id or "", payload=request.payload or {}, priority=request.priority,
            expiration=request.expiration, status_code=answer.status, reason=answer.reason,
            request_id=answer.request_id, apns_unique_id=answer.apns_unique_id, campaign=request.campaign,
        )  # fmt: skip
        return answer
