"""The embedded Redis of `noti dev` behaves as Redis does where the components rely on it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis

from noti.dev.embedded_redis import EmbeddedRedis


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    embedded = EmbeddedRedis().start()
    yield embedded
    embedded.stop()


def test_blocking_group_read_waits_for_the_next_entry(server: EmbeddedRedis) -> None:
    reader, writer = redis.Redis.from_url(server.url), redis.Redis.from_url(server.url)
    reader.xgroup_create("s", "g", id="0", mkstream=True)
    threading.Timer(0.3, writer.xadd, ("s", {"a": "1"})).start()
    # Without the wait, fakeredis answers the empty read at once and the entry comes only with the next read.
    answer = reader.xreadgroup("g", "c", {"s": ">"}, count=10, block=5000)
    assert [[stream, [fields for _id, fields in entries]] for stream, entries in answer] == [[b"s", [{b"a": b"1"}]]]


def test_blocking_group_read_times_out_empty(server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(server.url)
    client.xgroup_create("s", "g", id="0", mkstream=True)
    assert client.xreadgroup("g", "c", {"s": ">"}, count=10, block=100) == []
    client.xadd("s", {"a": "1"})
    assert len(client.xreadgroup("g", "c", {"s": ">"}, count=10, block=100)[0][1]) == 1
    # Reading one's own pending entries ("0") answers at once with what is there, as on Redis.
    assert len(client.xreadgroup("g", "c", {"s": "0"}, count=10, block=100)[0][1]) == 1
