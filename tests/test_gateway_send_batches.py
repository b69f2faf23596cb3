"""Concurrent single sends share micro-batches: whatever their shapes and keys, none fails another."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from sqlalchemy import text as sql_text
from sqlalchemy.exc import IntegrityError

from harness.contents import ALERT_FIELDS, as_json_numbers, contents
from harness.gateway import APP, StoreGateway, serve, stream_of
from noti.gateway.ids import new_id
from noti.gateway.sends import Accepted, Send
from noti.queue import ENVIRONMENTS, QueuedNotification
from noti.store.content import COLUMNS
from noti.store.models import Notification

TOKEN = "ab" * 32
STREAM = stream_of(APP, "sandbox")


def nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def register(http: httpx.AsyncClient, token: str = TOKEN) -> None:
    response = await http.post("/api/devices/", json={"device_token": token, "app": APP})
    assert response.status_code == 201, response.text


def queued(r: redis.Redis, stream: str = STREAM) -> dict[uuid.UUID, QueuedNotification]:
    messages = [QueuedNotification.decode(fields) for _, fields in r.xrange(stream)]
    return {message.id: message for message in messages}


async def test_concurrent_sends_of_different_shapes_all_succeed(
    any_store: StoreGateway, clean_redis: redis.Redis
) -> None:
    async with any_store.client(any_store.new_key()) as http:
        await register(http)
        shapes = [{"device_token": TOKEN, "title": "t"}, {"device_token": TOKEN, "body": "b", "badge": 1}]
        responses = await asyncio.gather(*(http.post("/api/notifications/", json=shapes[n % 2]) for n in range(40)))
    assert [r.status_code for r in responses] == [202] * 40, {r.text for r in responses}
    sent = {uuid.UUID(r.json()["id"]): shapes[n % 2] for n, r in enumerate(responses)}
    with any_store.engine.connect() as connection:
        stored = {row.id: row for row in connection.execute(select(Notification))}
    messages = queued(clean_redis)
    assert set(stored) == set(messages) == set(sent)
    for id, body in sent.items():
        assert (stored[id].title, stored[id].body, stored[id].badge) == (
            body.get("title"),
            body.get("body"),
            body.get("badge"),
        )
        assert messages[id].content == {"push_type": "alert", **{k: v for k, v in body.items() if k != "device_token"}}


INVALID = {
    "an app that is no bundle id": b'{"device_token": "%s", "app": "com.example probe", "body": "x"}' % TOKEN.encode(),
    "data nested 254 deep": b'{"device_token": "%s", "body": "x", "data": %s}'
    % (TOKEN.encode(), b'{"a":' * 253 + b"1" + b"}" * 253),
    "NaN in data": b'{"device_token": "%s", "body": "x", "data": {"score": NaN}}' % TOKEN.encode(),
    "Infinity in data": b'{"device_token": "%s", "body": "x", "data": {"n": [1, -Infinity]}}' % TOKEN.encode(),
}


@pytest.mark.parametrize("case", list(INVALID))
async def test_an_invalid_send_fails_alone_beside_valid_sends_from_another_key(
    any_store: StoreGateway, clean_redis: redis.Redis, case: str
) -> None:
    async with any_store.client(any_store.new_key("good")) as good, any_store.client(any_store.new_key("bad")) as bad:
        await register(good)
        await good.get("/api/notifications/stats/")
        await bad.get("/api/notifications/stats/")  # both keys verified: their sends meet in one batch
        valid = [good.post("/api/notifications/", json={"device_token": TOKEN, "body": str(n)}) for n in range(40)]
        hostile = bad.post("/api/notifications/", content=INVALID[case], headers={"content-type": "application/json"})
        answers = await asyncio.gather(*valid[:20], hostile, *valid[20:])  # the hostile one amid the batch
    refused = answers.pop(20)
    assert [r.status_code for r in answers] == [202] * 40, {r.text for r in answers}
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] in {"body.app", "body.data"}
    assert len(queued(clean_redis)) == 40
    with any_store.engine.connect() as connection:
        assert len(connection.execute(select(Notification.id)).all()) == 40


@contextlib.contextmanager
def refusing_body(engine: Engine, body: str) -> Iterator[None]:
    """The store refuses records with ``body`` (a constraint no check of the gateway knows of)."""
    if engine.dialect.name == "postgresql":
        added = f"ALTER TABLE notifications ADD CONSTRAINT ck_test_refused CHECK (body IS DISTINCT FROM '{body}')"
        removed = "ALTER TABLE notifications DROP CONSTRAINT ck_test_refused"
    else:
        added = (
            f"CREATE TRIGGER test_refused BEFORE INSERT ON notifications WHEN NEW.body = '{body}'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        removed = "DROP TRIGGER test_refused"
    with engine.begin() as connection:
        connection.execute(sql_text(added))
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(sql_text(removed))


async def test_a_send_the_store_refuses_in_a_batch_fails_alone(
    any_store: StoreGateway, clean_redis: redis.Redis
) -> None:
    """What no check foresaw (here: a constraint of the store's) fails its own send, not its batch."""
    enqueuer = any_store.app.state.gateway.enqueuer
    taken = await enqueuer.send(Send(new_id(), TOKEN, APP, "sandbox", {"push_type": "alert", "body": "first"}))
    batch = [Send(new_id(), TOKEN, APP, "sandbox", {"push_type": "alert", "body": str(n)}) for n in range(20)]
    batch.insert(10, Send(new_id(), TOKEN, APP, "sandbox", {"push_type": "alert", "body": "refused"}))
    with refusing_body(any_store.engine, "refused"):
        answers = await asyncio.gather(*(enqueuer.send(send) for send in batch), return_exceptions=True)
    refused = answers.pop(10)
    assert isinstance(refused, IntegrityError)
    assert all(isinstance(answer, Accepted) for answer in answers), answers
    assert len(queued(clean_redis)) == 21
    with any_store.engine.connect() as connection:
        stored = dict(connection.execute(select(Notification.id, Notification.body)).all())
    assert len(stored) == 21 and stored[taken.id] == "first"


async def test_a_stream_redis_refuses_fails_only_the_sends_queued_into_it(
    any_store: StoreGateway, clean_redis: redis.Redis
) -> None:
    broken_app = "com.example.broken"
    broken_token = "cd" * 32
    serve(clean_redis, broken_app)
    broken_stream = stream_of(broken_app)
    clean_redis.set(broken_stream, "not a stream")  # every XADD to it answers WRONGTYPE
    async with any_store.client(any_store.new_key()) as http:
        await register(http)
        response = await http.post("/api/devices/", json={"device_token": broken_token, "app": broken_app})
        assert response.status_code == 201, response.text
        tokens = [TOKEN if n % 2 else broken_token for n in range(40)]
        answers = await asyncio.gather(
            *(http.post("/api/notifications/", json={"device_token": token, "body": str(n)})
              for n, token in enumerate(tokens))
        )  # fmt: skip
        good = [answer for answer, token in zip(answers, tokens, strict=True) if token == TOKEN]
        refused = [answer for answer, token in zip(answers, tokens, strict=True) if token == broken_token]
        assert [r.status_code for r in good] == [202] * 20, {r.text for r in good}
        assert [r.status_code for r in refused] == [500] * 20, {r.text for r in refused}
        assert all(broken_stream in r.json()["detail"] and "WRONGTYPE" in r.json()["detail"] for r in refused)
        failed = await http.get("/api/notifications/", params={"device_token": broken_token, "limit": 100})
    assert {n["status"] for n in failed.json()["results"]} == {"failed"} and len(failed.json()["results"]) == 20
    assert set(queued(clean_redis)) == {uuid.UUID(r.json()["id"]) for r in good}
    with any_store.engine.connect() as connection:
        statuses = dict(connection.execute(select(Notification.id, Notification.status)).all())
    assert {statuses[uuid.UUID(r.json()["id"])] for r in good} == {"queued"}


# --- property: any mix of sends, drawn from the whole NotificationIn schema ---

OTHER_APP = "com.example.other"
REGISTERED = [f"{n:02x}" * 32 for n in (0xA1, 0xA2, 0xA3)]


@st.composite
def valid_sends(draw: st.DrawFn) -> dict[str, Any]:
    """A send the gateway must accept: any subset of the optional fields, to a registered device or not."""
    body = draw(contents())
    if draw(st.booleans()):
        body["environment"] = draw(st.sampled_from(ENVIRONMENTS))
    if draw(st.booleans()):
        body["device_token"] = draw(st.sampled_from(REGISTERED))
        if draw(st.booleans()):
            body["app"] = APP
    else:
        body["device_token"] = draw(st.binary(min_size=32, max_size=32)).hex()
        body["app"] = draw(st.sampled_from([APP, OTHER_APP]))
    return body


def _raw(body: str) -> bytes:
    return body.replace("T", REGISTERED[0]).encode()


# Each refused by its own 422 naming the field; bodies as bytes, since some are JSON only Python reads.
INVALID_SENDS: list[tuple[bytes, str]] = [
    (_raw('{"device_token": "T", "data": %s}' % ('{"a":' * 253 + "1" + "}" * 253)), "body.data"),
    (_raw('{"device_token": "T", "content_state": %s}' % ("[" * 40 + "]" * 40)), "body.content_state"),
    (_raw('{"device_token": "T", "sound": {"name": "a", "volume": %s}}' % ("[" * 40 + "]" * 40)), "body.sound"),
    (_raw('{"device_token": "T", "data": {"x": NaN}}'), "body.data"),
    (_raw('{"device_token": "T", "attributes": {"x": [Infinity]}}'), "body.attributes"),
    (_raw('{"device_token": "T", "data": {"k\\u0000": 1}}'), "body.data"),
    (_raw('{"device_token": "T", "push_type": "background", "title": "t"}'), "body.push_type"),
    (_raw('{"device_token": "T", "data": {"blob": "%s"}}' % ("y" * 4100)), "body"),
    (_raw('{"device_token": "T", "sound": {"volume": 1}}'), "body.sound"),
    (_raw('{"device_token": "T", "data": {"aps": {}}}'), "body.data"),
    (_raw('{"device_token": "T", "collapse_id": "\\ud800"}'), "body.collapse_id"),
    (_raw('{"device_token": "T", "collapse_id": "%s"}' % ("\u00e9" * 32)), "body.collapse_id"),
    (_raw('{"device_token": "T", "app": "com.example probe"}'), "body.app"),
    (_raw('{"device_token": "T", "app": "x}:tx{"}'), "body.app"),
    (_raw('{"device_token": "T", "priority": 7}'), "body.priority"),
    (_raw('{"device_token": "T", "bogus": 1}'), "body.bogus"),
    (_raw('{"device_token": "abc", "app": "com.example.app"}'), "body.device_token"),
]


def expected_record(body: dict[str, Any]) -> dict[str, Any]:
    """The columns of a send's record: what the body says, the push type's default priority (the one sent)."""
    push_type = body.get("push_type", "alert")
    quiet = push_type in {"background", "liveactivity"} and not any(name in body for name in ALERT_FIELDS)
    defaults = {"push_type": "alert", "priority": 5 if quiet else 10}
    return {name: body.get(name, defaults.get(name)) for name in COLUMNS}


class Mix(NamedTuple):
    # (API key, a valid body or an INVALID_SENDS index, whether it carries a fresh Idempotency-Key)
    sends: list[tuple[int, dict[str, Any] | int, bool]]


mixes = st.lists(
    st.tuples(
        st.integers(0, 2),
        valid_sends() | st.integers(0, len(INVALID_SENDS) - 1),
        st.booleans(),
    ),
    min_size=1,
    max_size=24,
).map(Mix)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(mix=mixes)
async def test_any_mix_of_concurrent_sends_each_gets_its_own_answer(
    any_store: StoreGateway, clean_redis: redis.Redis, mix: Mix
) -> None:
    clients = [any_store.client(any_store.key(f"mix-{n}")) for n in range(3)]
    for token in REGISTERED:  # registered again each example: an update, answered 200
        response = await clients[0].post("/api/devices/", json={"device_token": token, "app": APP})
        assert response.status_code in (200, 201), response.text

    def post(key: int, body: dict[str, Any] | int, idempotent: bool) -> Any:
        headers = {"Idempotency-Key": str(uuid.uuid4())} if idempotent else {}
        if isinstance(body, int):
            headers["content-type"] = "application/json"
            return clients[key].post("/api/notifications/", content=INVALID_SENDS[body][0], headers=headers)
        return clients[key].post("/api/notifications/", json=body, headers=headers)

    try:
        answers = await asyncio.gather(*(post(*send) for send in mix.sends))
    finally:
        for http in clients:
            await http.aclose()

    accepted: dict[uuid.UUID, dict[str, Any]] = {}
    for (_, body, _), answer in zip(mix.sends, answers, strict=True):
        if isinstance(body, int):
            assert answer.status_code == 422, (INVALID_SENDS[body][0][:200], answer.text)
            assert answer.json()["errors"][0]["field"] == INVALID_SENDS[body][1], answer.text
        else:
            assert answer.status_code == 202, (body, answer.text)
            accepted[uuid.UUID(answer.json()["id"])] = body
    with any_store.engine.connect() as connection:
        stored = connection.execute(select(Notification).where(Notification.id.in_(list(accepted)))).all()
    entries = [
        QueuedNotification.decode(fields)
        for app in (APP, OTHER_APP)
        for environment in ("sandbox", "production")
        for _, fields in clean_redis.xrange(stream_of(app, environment))
    ]
    queued_here = [entry for entry in entries if entry.id in accepted]
    assert sorted(row.id for row in stored) == sorted(accepted)
    assert sorted(entry.id for entry in queued_here) == sorted(accepted)
    records_by_id = {row.id: row for row in stored}
    for entry in queued_here:
        body = accepted[entry.id]
        content = {k: v for k, v in body.items() if k not in {"device_token", "app", "environment"}}
        assert entry.content == {"push_type": "alert", **content}
        assert entry.device_token == body["device_token"]
        assert entry.app == body.get("app", APP)
        record = records_by_id[entry.id]
        stored_columns = {name: getattr(record, name) for name in COLUMNS}
        assert as_json_numbers(stored_columns) == as_json_numbers(expected_record(body))
        assert (record.app, record.device_id, record.status) == (entry.app, entry.device_id, "queued")
        assert (entry.device_id is not None) == (body["device_token"] in REGISTERED)


async def test_racing_requests_with_one_idempotency_key_the_first_body_wins(
    any_store: StoreGateway, clean_redis: redis.Redis
) -> None:
    bodies = {"A": {"device_token": TOKEN, "body": "A"}, "B": {"device_token": TOKEN, "body": "B"}}
    async with any_store.client(any_store.new_key()) as http:
        await register(http)
        for round in range(4):
            headers = {"Idempotency-Key": f"race-{round}"}
            order = ["A", "B"] * 10
            answers = await asyncio.gather(
                *(http.post("/api/notifications/", json=bodies[which], headers=headers) for which in order)
            )
            by_body = {which: [a for w, a in zip(order, answers, strict=True) if w == which] for which in bodies}
            winner = "A" if any(a.status_code == 202 for a in by_body["A"]) else "B"
            loser = "B" if winner == "A" else "A"
            assert sorted(a.status_code for a in by_body[winner]) == [200] * 9 + [202], [a.text for a in answers]
            assert len({a.json()["id"] for a in by_body[winner]}) == 1
            assert [a.status_code for a in by_body[loser]] == [422] * 10
            assert all("Idempotency-Key" in a.json()["detail"] for a in by_body[loser])
            id = uuid.UUID(by_body[winner][0].json()["id"])
            with any_store.engine.connect() as connection:
                assert connection.execute(select(Notification.body).where(Notification.id == id)).scalar() == winner
            assert queued(clean_redis)[id].content["body"] == winner
    assert len(queued(clean_redis)) == 4
