"""Planning of single and bulk sends (pure), and the micro-batcher, tested without a store."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from noti.gateway.batcher import Batcher
from noti.gateway.errors import ApiError
from noti.gateway.ids import idempotent_id
from noti.gateway.sends import (
    Accepted,
    BulkSend,
    Known,
    Send,
    first_uses,
    plan_bulk,
    plan_sends,
    reusing,
    settle_sends,
    stream_for,
)
from noti.routes import Route
from noti.store.content import RECORD_COLUMNS
from noti.store.models import NotificationStatus

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
APP = "com.example.app"
T1, T2 = "a1" * 32, "b2" * 32
A_SANDBOX, A_PRODUCTION, OTHER = "team-a/app-sandbox", "team-a/app-production", "team-a/other"
ROUTES = {
    f"sandbox:{APP}": Route(A_SANDBOX, "TEAM.KEY"),
    f"production:{APP}": Route(A_PRODUCTION, "TEAM.KEY"),
    "sandbox:com.example.other": Route(OTHER, "TEAM.KEY"),
}


def device(id: int, token: str, app: str = APP, is_active: bool = True, **extra: Any) -> Any:
    return SimpleNamespace(id=id, device_token=token, app=app, is_active=is_active, **extra)


def send(token: str = T1, content: dict[str, Any] | None = None, **fields: Any) -> Send:
    values: dict[str, Any] = {"id": uuid.uuid4(), "device_token": token, "app": None, "environment": "sandbox"}
    return Send(content=content or {"push_type": "alert", "body": "x"}, **{**values, **fields})


def field_of(answer: object) -> str:
    assert isinstance(answer, ApiError) and answer.errors
    return answer.errors[0].field


def test_a_reused_key_is_told_apart_by_position_not_by_id() -> None:
    id = uuid.uuid4()
    a1, b, a2 = (send(id=id, idempotency_key="k", fingerprint=f) for f in ("A", "B", "A"))
    assert first_uses([a1, b, a2]) == {"k": "A"}
    assert reusing([a1, b, a2], {"k": "A"}) == [False, True, False]
    plan = plan_sends([a1, b, a2], [False, True, False], {}, {T1: [device(1, T1)]}, NOW, ROUTES)
    assert plan.answers[0] is None and field_of(plan.answers[1]) == "header.Idempotency-Key"
    assert plan.answers[2] == Accepted(id, NotificationStatus.QUEUED, replayed=True, credential=A_SANDBOX)
    assert list(plan.rows) == [id]


def test_planning_refuses_each_send_that_cannot_go_and_only_that_one() -> None:
    devices = {
        T1: [device(1, T1), device(2, T1, app="com.example.other")],
        T2: [device(3, T2, is_active=False)],
        "c3" * 32: [device(4, "c3" * 32, app="a b")],  # registered before bundle ids were checked
    }
    sends = [
        send(T1),  # two apps: which?
        send(T1, app="com.example.other"),
        send(T2),  # inactive
        send("d4" * 32),  # unknown, no app
        send("d4" * 32, app=APP),  # unknown, with app: goes
        send("c3" * 32),
    ]
    plan = plan_sends(sends, [False] * len(sends), {}, devices, NOW, ROUTES)
    assert field_of(plan.answers[0]) == "body.app"
    assert field_of(plan.answers[2]) == field_of(plan.answers[3]) == "body.device_token"
    assert field_of(plan.answers[5]) == "body.app"
    assert [a for a in (plan.answers[1], plan.answers[4])] == [None, None]
    rows = [row for row, _ in plan.rows.values()]
    assert [(r["app"], r["device_id"], r["credential"]) for r in rows] == [
        ("com.example.other", 2, OTHER),
        (APP, None, A_SANDBOX),
    ]


def test_a_send_no_credential_serves_is_refused_naming_its_app_and_environment() -> None:
    sends = [send("d4" * 32, app="com.nope"), send(T1, environment="production", app="com.example.other"), send(T2)]
    devices = {T1: [device(1, T1), device(2, T1, app="com.example.other")], T2: [device(3, T2)]}
    plan = plan_sends(sends, [False] * 3, {}, devices, NOW, ROUTES)
    refused = [answer.errors[0].message for answer in plan.answers[:2] if isinstance(answer, ApiError)]
    assert refused[0].startswith("no credential serves app com.nope in environment sandbox")
    assert refused[1].startswith("no credential serves app com.example.other in environment production")
    assert plan.answers[2] is None and list(plan.rows) == [sends[2].id]  # only the served send is written


def test_every_planned_record_carries_every_content_column() -> None:
    shapes = [{"push_type": "alert", "title": "t"}, {"push_type": "alert", "body": "b", "badge": 1}]
    plan = plan_sends([send(content=c) for c in shapes], [False, False], {}, {T1: [device(1, T1)]}, NOW, ROUTES)
    rows = [row for row, _ in plan.rows.values()]
    assert rows[0].keys() == rows[1].keys() >= set(RECORD_COLUMNS)
    assert (rows[0]["title"], rows[0]["badge"], rows[1]["title"], rows[1]["badge"]) == ("t", None, None, 1)
    assert rows[0]["priority"] == rows[1]["priority"] == 10  # an alert's default, the one APNs is sent


def test_settling_answers_written_sends_and_replays_the_others_and_queues_per_stream() -> None:
    known_id = uuid.uuid4()
    sends = [send(), send(id=known_id, idempotency_key="k", fingerprint="f"), send(environment="production")]
    known = {known_id: Known(NotificationStatus.SENT, A_SANDBOX)}
    plan = plan_sends(sends, [False] * 3, known, {T1: [device(1, T1)]}, NOW, ROUTES)
    written = {sends[0].id, sends[2].id}
    settled = settle_sends(sends, plan, written, known)
    assert settled.answers == [
        Accepted(sends[0].id, NotificationStatus.QUEUED, credential=A_SANDBOX),
        Accepted(known_id, NotificationStatus.SENT, replayed=True, credential=A_SANDBOX),
        Accepted(sends[2].id, NotificationStatus.QUEUED, credential=A_PRODUCTION),
    ]
    streams = {entries.stream: entries.ids for entries in settled.entries}
    assert streams == {stream_for(A_SANDBOX): [sends[0].id], stream_for(A_PRODUCTION): [sends[2].id]}


def test_a_bulk_plan_lists_misses_and_inactive_devices_and_derives_idempotent_ids() -> None:
    found = [device(1, T1), device(2, T2, is_active=False)]
    bulk = BulkSend([T1, T2, "ff" * 32, T1], None, None, "sandbox", {"push_type": "alert", "title": "Sale"})
    plan = plan_bulk(bulk, found, NOW, ROUTES, new_ids=lambda n: [f"id-{i}" for i in range(n)])
    assert (plan.not_found, plan.inactive, plan.fresh_ids) == (["ff" * 32], [T2], True)
    assert plan.rows == [{"id": "id-0", "device_id": 1, "device_token": T1, "app": APP, "credential": A_SANDBOX}]
    assert plan.shared["title"] == "Sale" and plan.shared["status"] is NotificationStatus.QUEUED
    again = plan_bulk(BulkSend([T1], None, None, "sandbox", {"push_type": "alert"}, "p:k", "f"), found, NOW, ROUTES)
    assert again.rows[0]["id"] == idempotent_id("p:k", "bulk", f"{APP}/{T1}") and not again.fresh_ids
    by_owner = BulkSend(None, ["ann", "bob"], None, "sandbox", {"push_type": "alert"})
    assert plan_bulk(by_owner, [device(1, T1, external_id="ann")], NOW, ROUTES).not_found == ["bob"]


def test_a_bulk_send_reaching_an_app_no_credential_serves_is_refused_whole() -> None:
    found = [device(1, T1), device(2, T2, app="com.nope")]
    bulk = BulkSend([T1, T2], None, None, "sandbox", {"push_type": "alert", "title": "Sale"})
    with pytest.raises(ApiError, match=r"no credential serves app com\.nope in environment sandbox"):
        plan_bulk(bulk, found, NOW, ROUTES)
    with pytest.raises(ApiError, match=r"no credential serves app com\.nope in environment sandbox"):
        plan_bulk(BulkSend(["ff" * 32], None, "com.nope", "sandbox", {"push_type": "alert"}), [], NOW, ROUTES)


async def test_the_batcher_coalesces_what_arrives_meanwhile_and_answers_each_alone() -> None:
    batches: list[list[int]] = []

    async def handle(items: list[int]) -> list[int | Exception]:
        batches.append(items)
        await asyncio.sleep(0.01)
        return [ValueError(item) if item == 3 else item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(handle, max_size=4, name="test")
    await batcher.start()
    answers = await asyncio.gather(*(batcher.submit(n) for n in range(7)), return_exceptions=True)
    await batcher.stop()
    assert [a if isinstance(a, int) else repr(a) for a in answers] == [0, 10, 20, "ValueError(3)", 40, 50, 60]
    assert [len(batch) for batch in batches] == [4, 3]
    assert [item for batch in batches for item in batch] == list(range(7))


async def test_a_batch_that_fails_as_a_whole_fails_each_of_its_submitters() -> None:
    async def handle(items: list[int]) -> list[int | Exception]:
        raise ConnectionError("store down")

    batcher: Batcher[int, int] = Batcher(handle, max_size=10, name="test")
    await batcher.start()
    answers = await asyncio.gather(*(batcher.submit(n) for n in range(3)), return_exceptions=True)
    await batcher.stop()
    assert all(isinstance(a, ConnectionError) for a in answers)


async def test_submitters_waiting_through_a_batch_that_met_an_outage_hear_it_without_a_second_wait() -> None:
    handled: list[list[int]] = []

    async def handle(items: list[int]) -> list[int | Exception]:
        handled.append(items)
        await asyncio.sleep(0.3)  # a store that answers no more: each batch waits out its bound
        raise TimeoutError("no answer")

    batcher: Batcher[int, int] = Batcher(handle, max_size=10, name="test", is_outage=lambda e: True)
    await batcher.start()
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    waiting = await asyncio.gather(*(batcher.submit(n) for n in range(1, 4)), return_exceptions=True)
    waited = time.monotonic() - started
    later = await asyncio.gather(batcher.submit(9), return_exceptions=True)  # after the outage was met: tried again
    await batcher.stop()
    assert isinstance((await asyncio.gather(first, return_exceptions=True))[0], TimeoutError)
    assert all(isinstance(answer, TimeoutError) for answer in [*waiting, *later])
    assert waited < 0.3  # answered when the first batch failed, not after a batch of their own
    assert handled == [[0], [9]]


async def test_a_batch_that_fails_for_its_own_reasons_leaves_the_next_batch_to_be_tried() -> None:
    async def handle(items: list[int]) -> list[int | Exception]:
        await asyncio.sleep(0.05)
        if 0 in items:
            raise ValueError("this batch only")
        return items

    batcher: Batcher[int, int] = Batcher(handle, max_size=10, name="test", is_outage=lambda e: False)
    await batcher.start()
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.01)
    rest = await asyncio.gather(*(batcher.submit(n) for n in range(1, 4)))
    await batcher.stop()
    assert isinstance((await asyncio.gather(first, return_exceptions=True))[0], ValueError)
    assert rest == [1, 2, 3]


async def test_a_stopped_batcher_still_answers_everything_submitted() -> None:
    async def handle(items: list[int]) -> list[int | Exception]:
        await asyncio.sleep(0.05)
        return items

    batcher: Batcher[int, int] = Batcher(handle, max_size=2, name="test")
    await batcher.start()
    in_hand = asyncio.ensure_future(batcher.submit(7))
    await asyncio.sleep(0.01)
    waiting = [asyncio.ensure_future(batcher.submit(n)) for n in range(5)]
    await asyncio.sleep(0)  # submitted, not yet taken into a batch
    await batcher.stop()
    assert await in_hand == 7 and not batcher.running
    assert await asyncio.gather(*waiting) == list(range(5))
