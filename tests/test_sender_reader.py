"""The fair campaign order the reader serves campaigns in, and its roster through a store outage (the read itself
is tested in test_sender_delivery)."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from harness.procs import free_port
from noti.queue import StreamKeys, campaign_fanout_cursor
from noti.sender.reader import CampaignRoster, fair_order
from noti.store.db import Bounds, make_engine


def test_campaigns_take_turns() -> None:
    assert [fair_order(["a", "b", "c"], turn)[0] for turn in range(4)] == ["a", "b", "c", "a"]


def test_every_campaign_is_served_each_turn() -> None:
    assert all(sorted(fair_order(["a", "b", "c"], turn)) == ["a", "b", "c"] for turn in range(6))


def test_no_campaigns_no_order() -> None:
    assert fair_order([], 7) == []


async def test_a_campaign_stays_on_the_roster_while_the_store_that_would_tell_it_finished_is_away(
    clean_redis: redis.Redis, redis_url: str
) -> None:
    """Reading goes on through a store outage (it used to end the sender's read loop)."""
    queue = StreamKeys("default/app")
    clean_redis.sadd(queue.campaigns, "default/spring")
    clean_redis.hset(campaign_fanout_cursor("default/spring"), "done", "1")
    away = make_engine(f"postgresql+psycopg://noti@127.0.0.1:{free_port()}/noti", bounds=Bounds(connect=2))
    client = aioredis.Redis.from_url(redis_url)
    try:
        roster = CampaignRoster(client, away, queue)
        assert await roster.active() == ["default/spring"]
    finally:
        await client.aclose()
        away.dispose()
