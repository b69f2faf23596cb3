"""Routes: which credential serves an app in an environment, claimed atomically in Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from noti.queue import ROUTES
from noti.routes import Claimed, Route, RouteTable, claim, release

APP = "com.example.app"
A = Route("team-a/push", "TEAMA00001.KEYA000001")


@pytest.fixture
async def client(clean_redis: object, redis_url: str) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


async def test_a_free_route_is_taken_and_its_holder_refreshes_it(client: aioredis.Redis) -> None:
    assert (await claim(client, APP, "sandbox", A)).outcome is Claimed.TAKEN
    again = await claim(client, APP, "sandbox", Route(A.credential, "TEAMA00001.KEYA000002"))  # a rotated key
    assert again.outcome is Claimed.HELD and again.holder.apple == "TEAMA00001.KEYA000002"
    assert await client.hget(ROUTES, f"sandbox:{APP}") == b"team-a/push TEAMA00001.KEYA000002"


async def test_another_namespace_claiming_the_same_app_is_a_conflict_naming_the_holder(
    client: aioredis.Redis,
) -> None:
    await claim(client, APP, "sandbox", A)
    for other in (Route("team-b/push", "TEAMB00001.KEYB000001"), Route("team-b/push", A.apple)):
        conflict = await claim(client, APP, "sandbox", other)
        assert conflict.outcome is Claimed.CONFLICT and conflict.holder == A and not conflict.serves
    assert (await claim(client, APP, "production", Route("team-b/push", "TEAMB00001.KEYB000001"))).serves
    assert (await client.hget(ROUTES, f"sandbox:{APP}")) == A.encode().encode()


async def test_the_same_apple_identity_in_the_same_namespace_shares_and_another_identity_conflicts(
    client: aioredis.Redis,
) -> None:
    await claim(client, APP, "sandbox", A)
    shared = await claim(client, APP, "sandbox", Route("team-a/campaigns", A.apple))
    assert shared.outcome is Claimed.SHARED and shared.holder == A and shared.serves
    stranger = await claim(client, APP, "sandbox", Route("team-a/made-up", "TEAMA00001.OTHERKEY01"))
    assert stranger.outcome is Claimed.CONFLICT


async def test_only_the_holder_releases_and_then_the_next_claimer_takes_over(client: aioredis.Redis) -> None:
    b = Route("team-b/push", "TEAMB00001.KEYB000001")
    await claim(client, APP, "sandbox", A)
    assert not await release(client, APP, "sandbox", b.credential)
    assert (await claim(client, APP, "sandbox", b)).outcome is Claimed.CONFLICT
    assert await release(client, APP, "sandbox", A.credential)
    assert not await release(client, APP, "sandbox", A.credential)  # already gone: nothing to do
    assert (await claim(client, APP, "sandbox", b)).outcome is Claimed.TAKEN


async def test_a_route_claim_refuses_what_is_no_bundle_id_environment_or_credential(client: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="environment"):
        await claim(client, APP, "staging", A)
    with pytest.raises(ValueError, match="bundle id"):
        await claim(client, "com.ex ample", "sandbox", A)
    with pytest.raises(ValueError, match="namespace/name"):
        Route("push", A.apple)


async def test_the_gateway_table_reads_routes_again_only_once_its_copy_is_old(client: aioredis.Redis) -> None:
    table = RouteTable(client, ttl=60)
    assert await table.current() == {}
    await claim(client, APP, "sandbox", A)
    assert await table.current() == {}  # the copy in hand, no round trip
    table.forget()
    assert await table.current() == {f"sandbox:{APP}": A}
