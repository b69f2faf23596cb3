"""The embedded Redis of `noti dev` behaves as Redis does where the components rely on it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from noti.dev.embedded_redis import EmbeddedRedis, oversized


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


def _stream(server: EmbeddedRedis, name: bytes) -> Any:
    return server._server.fake_server.dbs[0][name].value


def test_a_drained_stream_gives_its_tables_back_and_works_on(server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(server.url)
    client.xgroup_create("s", "g", id="0", mkstream=True)
    with client.pipeline(transaction=False) as pipe:
        for i in range(5000):
            pipe.xadd("s", {"n": str(i)})
        pipe.execute()
    ids = [
        entry_id for _stream, entries in client.xreadgroup("g", "c", {"s": ">"}, count=5000) for entry_id, _ in entries
    ]
    stream = _stream(server, b"s")
    peak = sys.getsizeof(stream._values_dict) + sys.getsizeof(stream._groups[b"g"].pel)
    client.xack("s", "g", *ids)
    client.xdel("s", *ids)  # as the sender does once a notification is recorded

    assert server.compact() >= 2  # the entries' table and the group's pending entries
    compacted = sys.getsizeof(stream._values_dict) + sys.getsizeof(stream._groups[b"g"].pel)
    assert compacted * 50 < peak, (compacted, peak)
    assert server.compact() == 0  # nothing left to do
    # The stream, its group and its ids go on as before.
    new_id = client.xadd("s", {"n": "next"})
    assert new_id > ids[-1]
    assert client.xreadgroup("g", "c", {"s": ">"}, count=10) == [[b"s", [(new_id, {b"n": b"next"})]]]
    assert client.xpending("s", "g")["pending"] == 1


def test_a_stream_in_use_is_left_as_it_is(server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(server.url)
    client.xgroup_create("s", "g", id="0", mkstream=True)
    with client.pipeline(transaction=False) as pipe:
        for i in range(2000):
            pipe.xadd("s", {"n": str(i)})
        pipe.execute()
    client.xreadgroup("g", "c", {"s": ">"}, count=1000)
    stream = _stream(server, b"s")
    tables = stream._values_dict, stream._groups[b"g"].pel
    assert server.compact() == 0
    assert (stream._values_dict, stream._groups[b"g"].pel) == tables and stream._values_dict is tables[0]
    assert client.xlen("s") == 2000 and client.xpending("s", "g")["pending"] == 1000


def test_only_a_dict_left_mostly_empty_by_deletions_counts_as_oversized() -> None:
    table = {i: i for i in range(10_000)}
    assert not oversized(table) and not oversized({}) and not oversized({1: 1})
    for i in range(9_900):
        del table[i]
    assert oversized(table)
    assert not oversized(dict(table))
