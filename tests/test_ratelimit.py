"""Token buckets in Redis, shared by every process using the same key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from noti.gateway.auth import RateLimiter
from noti.queue import api_key_rate_limit
from noti.ratelimit import Grant, TokenBucket


@pytest.fixture
async def aredis(clean_redis: redis.Redis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(connection_pool=aioredis.ConnectionPool(**clean_redis.connection_pool.connection_kwargs))
    yield client
    await client.aclose()


async def test_partial_takes_share_one_bucket_between_holders(aredis: aioredis.Redis) -> None:
    first, second = TokenBucket(aredis, "bucket", rate=100), TokenBucket(aredis, "bucket", rate=100)
    assert (await first.take(60)).granted == 60
    grant = await second.take(60)
    assert 40 <= grant.granted <= 41  # a few ms of refill at most
    assert grant.wait > 0


async def test_all_or_nothing_take_says_how_long_to_wait(aredis: aioredis.Redis) -> None:
    bucket = TokenBucket(aredis, "key", rate=10, burst=20)
    assert (await bucket.take(20, partial=False)).granted == 20
    refused = await bucket.take(5, partial=False)
    assert refused.granted == 0
    assert 0.3 < refused.wait <= 0.5


async def test_rate_zero_is_unlimited(aredis: aioredis.Redis) -> None:
    assert (await TokenBucket(aredis, "free", rate=0).take(10_000)).granted == 10_000
    assert await aredis.exists("free") == 0


async def test_gateway_limiter_refills_once_for_many_waiting_requests(
    aredis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    takes: list[int] = []
    take = TokenBucket.take

    async def counted(self: TokenBucket, wanted: int, *, partial: bool = True) -> Grant:
        takes.append(wanted)
        return await take(self, wanted, partial=partial)

    monkeypatch.setattr(TokenBucket, "take", counted)
    limiter = RateLimiter(aredis, rate=1000, burst=2000)  # leases of 50

    async def request() -> int:
        await asyncio.sleep(0)
        return await limiter.acquire("key1")

    assert await asyncio.gather(*(request() for _ in range(500))) == [0] * 500
    # Concurrent requests that find the lease spent share one refill: 10 leases of 50, none wasted.
    assert takes == [50] * 10
    tokens = float((await aredis.hget(api_key_rate_limit("key1"), "t")) or 0)
    assert 1500 <= tokens < 1600  # 500 taken, plus what refilled while the test ran
