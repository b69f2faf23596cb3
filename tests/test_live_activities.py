"""Live Activities end to end: tokens by kind over REST, start/update/end through the gateway, the
stream and an in-process sender to the APNs simulator over TLS HTTP/2, and 410s by token kind."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from harness.apns import SimulatorProcess
from harness.gateway import APP, StoreGateway, stream_of
from harness.sender import run_until_final
from noti.queue import QueuedNotification, epoch_ms
from noti.sender.config import SenderConfig
from noti.sender.service import Sender
from noti.store.models import Device, DeviceToken, Notification

DEVICE = "0a" * 32
OTHER_DEVICE = "0b" * 32
START_TOKEN = "5a" * 80  # push-to-start tokens are longer than device tokens
UPDATE_TOKEN = "7c" * 80
OTHER_UPDATE_TOKEN = "7d" * 80
VOIP_TOKEN = "9e" * 32
LIVE_TOPIC = f"{APP}.push-type.liveactivity"
START = {
    "event": "start",
    "attributes_type": "DeliveryAttributes",
    "attributes": {"order": "A-17"},
    "content_state": {"eta": 12},
    "alert": {"title": "On its way", "body": "ETA 12 minutes"},
}


def _config(simulator: SimulatorProcess) -> SenderConfig:
    env = {key.removeprefix("NOTI_").lower(): value for key, value in simulator.sender_env().items()}
    settings: dict[str, object] = {
        "credential": "default/test", "sender_health_port": 0, "sender_backoff_base": 0.05,
        "sender_backoff_max": 0.2, "sender_claim_idle_seconds": 2, **env,
    }  # fmt: skip
    return SenderConfig(**settings)  # type: ignore[arg-type]


async def _deliver(simulator: SimulatorProcess, engine: Engine, expected: int, seconds: float = 60) -> None:
    """Run a sender until ``expected`` records are final."""
    await run_until_final(Sender(_config(simulator)), engine, expected, seconds)


async def _device(client: httpx.AsyncClient, token: str = DEVICE, owner: str = "ann", **more: Any) -> None:
    answer = await client.post("/api/devices/", json={"device_token": token, "app": APP, "owner": owner, **more})
    assert answer.status_code in (200, 201), answer.text


async def _token(client: httpx.AsyncClient, device: str = DEVICE, **body: Any) -> httpx.Response:
    return await client.post(f"/api/devices/{device}/tokens/", json=body)


def _record(engine: Engine, id: str) -> Notification:
    with Session(engine) as session:
        return session.execute(select(Notification).where(Notification.id == uuid.UUID(id))).scalar_one()


def _token_row(engine: Engine, token: str) -> DeviceToken:
    with Session(engine) as session:
        return session.execute(select(DeviceToken).where(DeviceToken.token == token)).scalar_one()


# --- tokens by kind ---


async def test_tokens_of_each_kind_register_idempotently_list_and_delete(any_store: StoreGateway) -> None:
    async with any_store.client(any_store.new_key()) as client:
        await _device(client)
        first = await _token(client, kind="push_to_start", token=START_TOKEN, attributes_type="DeliveryAttributes")
        again = await _token(client, kind="push_to_start", token=START_TOKEN, attributes_type="DeliveryAttributes")
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["id"] == again.json()["id"]
        assert first.json()["push_type"] == "liveactivity"
        # A new push-to-start token of the same attributes type replaces the old one.
        newer = await _token(
            client, kind="push_to_start", token=START_TOKEN.upper().replace("5A", "5B", 1),
            attributes_type="DeliveryAttributes",
        )  # fmt: skip
        assert newer.status_code == 200 and newer.json()["token"].startswith("5b")
        update_token = await _token(
            client, kind="update", token=UPDATE_TOKEN, attributes_type="DeliveryAttributes", activity_id="act-1"
        )
        voip = await _token(client, kind="voip", token=VOIP_TOKEN)
        assert (update_token.status_code, voip.status_code) == (201, 201)
        assert voip.json()["push_type"] == "voip"

        listed = (await client.get(f"/api/devices/{DEVICE}/tokens/")).json()["results"]
        assert [(t["kind"], t["attributes_type"], t["activity_id"]) for t in listed] == [
            ("push_to_start", "DeliveryAttributes", None),
            ("update", "DeliveryAttributes", "act-1"),
            ("voip", None, None),
        ]
        only_voip = (await client.get(f"/api/devices/{DEVICE}/tokens/", params={"kind": "voip"})).json()["results"]
        assert [t["token"] for t in only_voip] == [VOIP_TOKEN]

        assert (await client.delete(f"/api/devices/{DEVICE}/tokens/{VOIP_TOKEN}/")).status_code == 204
        assert (await client.delete(f"/api/devices/{DEVICE}/tokens/{VOIP_TOKEN}/")).status_code == 404
        assert len((await client.get(f"/api/devices/{DEVICE}/tokens/")).json()["results"]) == 2
        # A deleted device takes its tokens with it.
        assert (await client.delete(f"/api/devices/{DEVICE}/")).status_code == 204
        with any_store.engine.connect() as connection:
            assert connection.execute(select(DeviceToken.id)).all() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "push_to_start", "token": START_TOKEN}, "body.attributes_type"),
        ({"kind": "update", "token": UPDATE_TOKEN, "attributes_type": "DeliveryAttributes"}, "body.activity_id"),
        ({"kind": "voip", "token": VOIP_TOKEN, "attributes_type": "DeliveryAttributes"}, "body.attributes_type"),
        ({"kind": "push_to_start", "token": "zz" * 40, "attributes_type": "A"}, "body.token"),
        ({"kind": "push_to_start", "token": "ab" * 10, "attributes_type": "A"}, "body.token"),
        ({"kind": "watch", "token": VOIP_TOKEN}, "body.kind"),
    ],
)
async def test_a_token_that_does_not_fit_its_kind_is_refused_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    await _device(client)
    answer = await _token(client, **body)
    assert answer.status_code == 422
    assert field in [error["field"] for error in answer.json()["errors"]]


async def test_a_token_for_an_unregistered_device_is_404(client: httpx.AsyncClient) -> None:
    answer = await _token(client, kind="voip", token=VOIP_TOKEN)
    assert answer.status_code == 404


# --- start, update, end over the simulator ---


async def test_start_update_and_end_reach_the_simulator_as_liveactivity_pushes_with_history(
    sender_env: None, client: httpx.AsyncClient, clean_db: Engine, apns_simulator: SimulatorProcess
) -> None:
    await _device(client)
    await _device(client, OTHER_DEVICE, owner="bob")
    await _token(client, kind="push_to_start", token=START_TOKEN, attributes_type="DeliveryAttributes")
    # Only the Live Activity topic knows these tokens: a push on the app's alert topic would be refused.
    apns_simulator.register_devices({START_TOKEN: [LIVE_TOPIC], UPDATE_TOKEN: [LIVE_TOPIC]})

    started = await client.post("/api/live-activities/", json={**START, "owner": "ann", "input_push_token": True})
    assert started.status_code == 202, started.text
    assert [n["token"] for n in started.json()["notifications"]] == [START_TOKEN]
    await _deliver(apns_simulator, clean_db, 1)

    # The started activity reported its update token.
    await _token(client, kind="update", token=UPDATE_TOKEN, attributes_type="DeliveryAttributes", activity_id="A-17")
    updated = await client.post(
        "/api/live-activities/",
        json={"event": "update", "activity_id": "A-17", "content_state": {"eta": 5}, "stale_date": 1_900_000_000},
    )
    ended = await client.post(
        "/api/live-activities/",
        json={"event": "end", "owner": "ann", "attributes_type": "DeliveryAttributes",
              "content_state": {"eta": 0}, "dismissal_date": int(time.time()) + 60, "priority": 10},
    )  # fmt: skip
    assert (updated.status_code, ended.status_code) == (202, 202), (updated.text, ended.text)
    await _deliver(apns_simulator, clean_db, 3)

    counters = apns_simulator.counters()
    assert counters["by_outcome"] == {"Success": 3}
    # An alerting start and an asked-for 10 draw on the budget; the silent update goes at 5.
    assert counters["live_activities"] == {"start/10": 1, "update/5": 1, "end/10": 1}
    history = (await client.get("/api/notifications/", params={"device_token": UPDATE_TOKEN})).json()["results"]
    assert sorted((n["event"], n["activity_id"], n["status"]) for n in history) == [
        ("end", "A-17", "sent"), ("update", "A-17", "sent"),
    ]  # fmt: skip
    record = _record(clean_db, started.json()["notifications"][0]["id"])
    assert (record.push_type, record.event, record.status) == ("liveactivity", "start", "sent")
    assert _record(clean_db, updated.json()["notifications"][0]["id"]).activity_id == "A-17"


async def test_an_expired_push_to_start_token_is_retired_and_its_device_stays_active(
    sender_env: None, client: httpx.AsyncClient, clean_db: Engine, apns_simulator: SimulatorProcess
) -> None:
    await _device(client)
    await _token(client, kind="push_to_start", token=START_TOKEN, attributes_type="DeliveryAttributes")
    expired_at = int(time.time() * 1000)  # after the registration: the token really is outdated
    apns_simulator.register_devices({START_TOKEN: {"topics": [LIVE_TOPIC], "expired_at": expired_at}})  # type: ignore[dict-item]

    started = await client.post("/api/live-activities/", json={**START, "device_token": DEVICE})
    assert started.status_code == 202, started.text
    await _deliver(apns_simulator, clean_db, 1)

    record = _record(clean_db, started.json()["notifications"][0]["id"])
    assert (record.status, record.apns_reason, record.status_code) == ("invalid_token", "ExpiredToken", 410)
    retired = _token_row(clean_db, START_TOKEN)
    assert not retired.is_active and retired.retired_at is not None
    with clean_db.connect() as connection:
        assert connection.execute(select(Device.is_active)).scalar_one() is True
    # A retired token is no target: the next start finds none, until the app registers a fresh one.
    again = await client.post("/api/live-activities/", json={**START, "device_token": DEVICE})
    assert again.status_code == 404
    await _token(client, kind="push_to_start", token=START_TOKEN, attributes_type="DeliveryAttributes")
    assert _token_row(clean_db, START_TOKEN).is_active


async def test_an_update_token_registered_after_apns_410_timestamp_is_kept(
    sender_env: None, client: httpx.AsyncClient, clean_db: Engine, apns_simulator: SimulatorProcess
) -> None:
    await _device(client)
    for token, activity in ((UPDATE_TOKEN, "A-1"), (OTHER_UPDATE_TOKEN, "A-2")):
        await _token(client, kind="update", token=token, attributes_type="DeliveryAttributes", activity_id=activity)
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    apns_simulator.register_devices({
        UPDATE_TOKEN: {"topics": [LIVE_TOPIC], "unregistered_at": an_hour_ago},  # before its registration: stale
        OTHER_UPDATE_TOKEN: {"topics": [LIVE_TOPIC], "unregistered_at": int(time.time() * 1000) + 1000},
    })  # type: ignore[dict-item]  # fmt: skip
    sent = await client.post(
        "/api/live-activities/",
        json={"event": "update", "owner": "ann", "attributes_type": "DeliveryAttributes", "content_state": {"eta": 1}},
    )
    assert sent.json()["count"] == 2
    await _deliver(apns_simulator, clean_db, 2)

    assert apns_simulator.counters()["by_outcome"] == {"Unregistered": 2}
    assert _token_row(clean_db, UPDATE_TOKEN).is_active  # registered after APNs' timestamp
    assert not _token_row(clean_db, OTHER_UPDATE_TOKEN).is_active


async def test_a_voip_push_goes_to_the_voip_token_on_the_voip_topic_and_a_410_retires_only_it(
    sender_env: None, client: httpx.AsyncClient, clean_db: Engine, apns_simulator: SimulatorProcess
) -> None:
    await _device(client)
    await _token(client, kind="voip", token=VOIP_TOKEN)
    apns_simulator.register_devices({VOIP_TOKEN: [f"{APP}.voip"], DEVICE: [APP]})
    first = await client.post(f"/api/devices/{DEVICE}/voip/", json={"data": {"call": "42"}})
    assert first.status_code == 202, first.text
    assert first.json()["token"] == VOIP_TOKEN
    await _deliver(apns_simulator, clean_db, 1)
    assert _record(clean_db, first.json()["id"]).status == "sent"
    assert _record(clean_db, first.json()["id"]).push_type == "voip"

    apns_simulator.set_faults(unregistered=[VOIP_TOKEN])
    second = await client.post(f"/api/devices/{DEVICE}/voip/", json={"data": {"call": "43"}})
    await _deliver(apns_simulator, clean_db, 2)
    assert _record(clean_db, second.json()["id"]).status == "invalid_token"
    assert not _token_row(clean_db, VOIP_TOKEN).is_active
    with clean_db.connect() as connection:
        assert connection.execute(select(Device.is_active)).scalar_one() is True  # its device token still works
    assert (await client.post(f"/api/devices/{DEVICE}/voip/", json={"data": {}})).status_code == 404


async def test_a_voip_push_of_another_push_type_is_refused(client: httpx.AsyncClient) -> None:
    await _device(client)
    await _token(client, kind="voip", token=VOIP_TOKEN)
    answer = await client.post(f"/api/devices/{DEVICE}/voip/", json={"push_type": "background"})
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "body.push_type"


async def test_a_start_by_tag_or_to_all_devices_reaches_each_push_to_start_token_of_its_type(
    client: httpx.AsyncClient,
) -> None:
    for n, tags in enumerate((["vip"], ["vip"], [], ["vip"])):
        device = f"{n + 1:064x}"
        await _device(client, device, owner=f"user-{n}", tags=tags)
        kind = "DeliveryAttributes" if n < 3 else "OtherAttributes"
        await _token(client, device, kind="push_to_start", token=f"{n + 1:0160x}", attributes_type=kind)
    by_tag = (await client.post("/api/live-activities/", json={**START, "tag": "vip"})).json()
    everyone = (await client.post("/api/live-activities/", json={**START, "all_devices": True})).json()
    assert sorted(n["token"] for n in by_tag["notifications"]) == [f"{1:0160x}", f"{2:0160x}"]
    assert everyone["count"] == 3  # the fourth device's token is of another attributes type


# --- what the API refuses ---


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**START, "alert": None, "owner": "ann"}, "body.alert"),
        ({**START, "attributes": None, "owner": "ann"}, "body.attributes"),
        ({**START, "attributes_type": None, "owner": "ann"}, "body.attributes_type"),
        ({**START}, "body.device_token"),  # no audience
        ({**START, "owner": "ann", "tag": "vip"}, "body.device_token"),  # two audiences
        ({**START, "owner": "ann", "dismissal_date": 1}, "body.dismissal_date"),
        ({**START, "owner": "ann", "input_push_token": True, "input_push_channel": "ch"}, "body.input_push_channel"),
        ({"event": "update", "owner": "ann", "content_state": {}}, "body.activity_id"),
        ({"event": "update", "activity_id": "A-1"}, "body.content_state"),
        ({"event": "end", "activity_id": "A-1", "relevance_score": 2}, "body.relevance_score"),
        ({"event": "pause", "activity_id": "A-1"}, "body.event"),
        ({"event": "update", "activity_id": "A-1", "content_state": {}, "priority": 1}, "body.priority"),
        ({"event": "end", "activity_id": "A-1", "attributes": {"x": 1}}, "body.attributes"),
    ],
)
async def test_a_live_activity_request_activitykit_could_not_use_is_422_naming_the_field(
    client: httpx.AsyncClient, clean_redis: redis.Redis, body: dict[str, Any], field: str
) -> None:
    answer = await client.post("/api/live-activities/", json={k: v for k, v in body.items() if v is not None})
    assert answer.status_code == 422, answer.text
    assert field in [error["field"] for error in answer.json()["errors"]]
    assert clean_redis.keys("*stream*") == []  # nothing queued


async def test_an_update_for_an_activity_nobody_registered_is_404(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/api/live-activities/", json={"event": "update", "activity_id": "nope", "content_state": {"eta": 1}}
    )
    assert answer.status_code == 404
    assert "update token" in answer.json()["detail"]


async def test_an_inactive_device_gets_no_live_activity(client: httpx.AsyncClient, clean_db: Engine) -> None:
    await _device(client)
    await _token(client, kind="push_to_start", token=START_TOKEN, attributes_type="DeliveryAttributes")
    with clean_db.begin() as connection:
        connection.execute(update(Device).values(is_active=False))
    assert (await client.post("/api/live-activities/", json={**START, "all_devices": True})).status_code == 404


async def test_live_activity_and_voip_messages_date_their_records_exactly(
    client: httpx.AsyncClient, clean_db: Engine, clean_redis: redis.Redis
) -> None:
    # The sender finds each record by id and created_at (one day's partition), so the two must agree.
    await _device(client)
    await _token(client, kind="push_to_start", token=START_TOKEN, attributes_type="DeliveryAttributes")
    await _token(client, kind="voip", token=VOIP_TOKEN)
    started = await client.post("/api/live-activities/", json={**START, "device_token": DEVICE})
    voip = await client.post(f"/api/devices/{DEVICE}/voip/", json={"data": {"call": "42"}})
    assert (started.status_code, voip.status_code) == (202, 202), (started.text, voip.text)
    ids = {uuid.UUID(started.json()["notifications"][0]["id"]), uuid.UUID(voip.json()["id"])}
    queued = {m.id: m.created_at for m in (QueuedNotification.decode(f) for _, f in clean_redis.xrange(stream_of(APP)))}
    assert set(queued) == ids
    assert queued == {id: epoch_ms(_record(clean_db, str(id)).created_at) for id in ids}


# --- ended activities ---


async def _two_activities(client: httpx.AsyncClient) -> None:
    await _device(client)
    for token, activity in ((UPDATE_TOKEN, "A-1"), (OTHER_UPDATE_TOKEN, "A-2")):
        answer = await _token(
            client, kind="update", token=token, attributes_type="DeliveryAttributes", activity_id=activity
        )
        assert answer.status_code == 201, answer.text


async def test_an_ended_activity_gets_no_more_owner_wide_updates_and_an_update_by_its_id_is_409(
    client: httpx.AsyncClient, clean_db: Engine
) -> None:
    await _two_activities(client)
    ended = await client.post("/api/live-activities/", json={"event": "end", "activity_id": "A-1", "content_state": {}})
    assert ended.status_code == 202, ended.text

    by_owner = {"event": "update", "owner": "ann", "attributes_type": "DeliveryAttributes", "content_state": {"eta": 3}}
    updated = await client.post("/api/live-activities/", json=by_owner)
    assert [n["activity_id"] for n in updated.json()["notifications"]] == ["A-2"]  # A-1 ended
    refused = await client.post(
        "/api/live-activities/", json={"event": "update", "activity_id": "A-1", "content_state": {"eta": 3}}
    )
    assert refused.status_code == 409 and "has ended" in refused.json()["detail"], refused.text
    # Kept, not deleted: the token and its history stay readable, and say when the activity ended.
    tokens = {t["activity_id"]: t for t in (await client.get(f"/api/devices/{DEVICE}/tokens/")).json()["results"]}
    assert tokens["A-1"]["ended_at"] is not None and tokens["A-1"]["is_active"] is True
    assert tokens["A-2"]["ended_at"] is None
    history = (await client.get("/api/notifications/", params={"device_token": UPDATE_TOKEN})).json()["results"]
    assert [n["event"] for n in history] == ["end"]
    # An end by its id may be sent again (APNs may not have taken the first); an owner-wide end skips it.
    again = await client.post("/api/live-activities/", json={"event": "end", "activity_id": "A-1", "content_state": {}})
    assert again.status_code == 202
    all_ended = await client.post("/api/live-activities/", json={**by_owner, "event": "end"})
    assert [n["activity_id"] for n in all_ended.json()["notifications"]] == ["A-2"]
    assert (await client.post("/api/live-activities/", json=by_owner)).status_code == 404
    # Registering the ended activity's token again does not bring the activity back.
    await _token(client, kind="update", token=UPDATE_TOKEN, attributes_type="DeliveryAttributes", activity_id="A-1")
    assert _token_row(clean_db, UPDATE_TOKEN).ended_at is not None


# --- Idempotency-Key ---


async def test_a_live_activity_retried_with_its_idempotency_key_is_replayed_and_queues_nothing_new(
    client: httpx.AsyncClient, clean_db: Engine, clean_redis: redis.Redis
) -> None:
    await _two_activities(client)
    body = {"event": "update", "owner": "ann", "attributes_type": "DeliveryAttributes", "content_state": {"eta": 3}}
    first = await client.post("/api/live-activities/", json=body, headers={"Idempotency-Key": "la-1"})
    assert first.status_code == 202, first.text
    queued = clean_redis.xlen(stream_of(APP))
    again = await client.post("/api/live-activities/", json=body, headers={"Idempotency-Key": "la-1"})
    assert (again.status_code, again.headers.get("Idempotent-Replayed")) == (200, "true")
    assert again.json() == first.json()
    assert clean_redis.xlen(stream_of(APP)) == queued == 2
    with clean_db.connect() as connection:
        assert len(connection.execute(select(Notification.id)).all()) == 2
    other = await client.post(
        "/api/live-activities/", json={**body, "content_state": {"eta": 4}}, headers={"Idempotency-Key": "la-1"}
    )
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "header.Idempotency-Key"


async def test_an_end_retried_with_its_idempotency_key_replays_its_answer_not_a_404(client: httpx.AsyncClient) -> None:
    await _two_activities(client)
    body = {"event": "end", "owner": "ann", "attributes_type": "DeliveryAttributes", "content_state": {}}
    first = await client.post("/api/live-activities/", json=body, headers={"Idempotency-Key": "end-1"})
    again = await client.post("/api/live-activities/", json=body, headers={"Idempotency-Key": "end-1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == first.json() and first.json()["count"] == 2


async def test_a_voip_push_retried_with_its_idempotency_key_is_replayed_and_another_body_is_422(
    client: httpx.AsyncClient, clean_db: Engine
) -> None:
    await _device(client)
    await _token(client, kind="voip", token=VOIP_TOKEN)
    url, key = f"/api/devices/{DEVICE}/voip/", {"Idempotency-Key": "call-42"}
    first = await client.post(url, json={"data": {"call": "42"}}, headers=key)
    again = await client.post(url, json={"data": {"call": "42"}}, headers=key)
    assert (first.status_code, again.status_code, again.headers.get("Idempotent-Replayed")) == (202, 200, "true")
    assert again.json() == first.json()
    with clean_db.connect() as connection:
        assert len(connection.execute(select(Notification.id)).all()) == 1
    other = await client.post(url, json={"data": {"call": "43"}}, headers=key)
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "header.Idempotency-Key"
