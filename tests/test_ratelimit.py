"""Token buckets in Redis, shared by every process using the same key."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from noti.ratelimit import TokenBucket


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
