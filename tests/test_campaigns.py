"""Campaign fan-out: audiences select stored devices; a resumed fan-out writes each record once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import yaml
from sqlalchemy import Engine, func, insert, select

from noti.campaigns import (
    CONTENT_FIELDS,
    CRD_FILE,
    LIVE_ACTIVITY_FIELDS,
    Audience,
    CampaignError,
    CampaignSpec,
    _write_chunk,
    cancel,
    fan_out,
)
from noti.queue import QueuedNotification, StreamKeys, campaign_counters, campaign_fanout_cursor, epoch_ms
from noti.store import migrate, records
from noti.store.db import make_engine
from noti.store.models import Device, DeviceOwner, DeviceToken, Notification, NotificationStatus, TokenKind
from noti.store.records import RecordUpdate
from noti.store.tokens import TokenFields, upsert_tokens

ROOT = Path(__file__).resolve().parents[1]
APP = "com.example.app"
CREDENTIAL = StreamKeys("default/push")


def _manifest(audience: dict[str, Any], **notification: Any) -> dict[str, Any]:
    return {
        "apiVersion": "noti.dev/v1alpha1",
        "kind": "NotificationCampaign",
        "metadata": {"name": "launch", "namespace": "shop", "uid": "u-1"},
        "spec": {
            "credentialRef": {"name": "my-app"},
            "notification": {"title": "Launch", "body": "It's here", "threadId": "launch", **notification},
            "audience": audience,
            "ratePerSecond": 500,
        },
    }


def _seed(engine: Engine, count: int) -> None:
    with engine.begin() as connection:
        owners = [{"external_id": f"user-{i}"} for i in range(count)]
        connection.execute(insert(DeviceOwner), owners)
        ids = dict(connection.execute(select(DeviceOwner.external_id, DeviceOwner.id)).all())
        connection.execute(
            insert(Device),
            [
                {
                    "app": APP,
                    "device_token": f"{i:064x}",
                    "owner_id": ids[f"user-{i}"],
                    "tags": ["vip"] if i % 10 == 0 else ["regular"],
                    "is_active": i % 7 != 3,
                }
                for i in range(count)
            ]
            + [
                {"app": "com.other.app", "device_token": f"{i:064x}", "owner_id": None, "tags": [], "is_active": True}
                for i in range(5)
            ],
        )


@pytest.fixture
async def aredis(clean_redis: redis.Redis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(connection_pool=aioredis.ConnectionPool(**clean_redis.connection_pool.connection_kwargs))
    yield client
    await client.aclose()


def test_manifest_errors_say_what_to_fix() -> None:
    with pytest.raises(CampaignError, match="exactly one of allDevices"):
        CampaignSpec.from_manifest(_manifest({"tags": ["a"], "deviceTokens": ["ab" * 32]}))
    with pytest.raises(CampaignError, match=r"^spec\.notification\.colour: unknown field$"):
        CampaignSpec.from_manifest(_manifest({"allDevices": True}, colour="red"))
    with pytest.raises(CampaignError, match="expected kind: NotificationCampaign"):
        CampaignSpec.from_manifest({"kind": "Deployment"})
    spec = CampaignSpec.from_manifest(_manifest({"allDevices": True}))
    assert spec.name == "shop/launch"
    assert spec.content == {"title": "Launch", "body": "It's here", "thread_id": "launch"}


def test_owners_is_the_audience_of_owners_and_its_earlier_name_still_works() -> None:
    assert CampaignSpec.from_manifest(_manifest({"owners": ["user-1"]})).audience == Audience(owners=("user-1",))
    earlier = CampaignSpec.from_manifest(_manifest({"ownerExternalIds": ["user-1"]}))
    assert earlier.audience == Audience(owners=("user-1",))
    with pytest.raises(CampaignError, match="exactly one of allDevices: true, owners, tags, deviceTokens"):
        CampaignSpec.from_manifest(_manifest({"owners": ["a"], "ownerExternalIds": ["b"]}))


def test_a_typo_in_a_spec_field_is_an_unknown_field_not_a_silent_default() -> None:
    manifest = _manifest({"allDevices": True})
    manifest["spec"]["ratePerSec"] = manifest["spec"].pop("ratePerSecond")
    with pytest.raises(CampaignError) as raised:
        CampaignSpec.from_manifest(manifest)
    assert str(raised.value) == "spec.ratePerSec: unknown field"


def test_every_problem_of_a_manifest_is_reported_with_its_path() -> None:
    manifest = _manifest({"tags": "vip", "tagz": ["vip"]}, badge=-1, pushType="push")
    manifest["spec"]["credentialRef"] = {}
    manifest["spec"]["ratePerSecond"] = "fast"
    manifest["specs"] = {}
    with pytest.raises(CampaignError) as raised:
        CampaignSpec.from_manifest(manifest)
    problems = str(raised.value).split("; ")
    assert set(problems) == {
        "specs: unknown field",
        "spec.credentialRef.name: required",
        "spec.audience.tagz: unknown field",
        "spec.audience.tags: must be an array",
        "spec.notification.badge: -1 is less than the minimum of 0",
        "spec.notification.pushType: 'push' is not one of ['alert', 'background', 'voip', 'liveactivity', "
        "'complication', 'fileprovider', 'mdm', 'location', 'pushtotalk', 'widgets', 'controls']",
        "spec.ratePerSecond: must be an integer",
    }, problems


def test_fields_the_crd_leaves_open_take_anything() -> None:
    manifest = _manifest(
        {"allDevices": True}, data={"deeplink": "app://x", "nested": {"any": [1, "two"]}},
        sound={"critical": 1, "name": "alarm.caf", "volume": 0.5},
    )  # fmt: skip
    manifest["metadata"]["labels"] = {"team": "growth"}
    manifest["status"] = {"phase": "Running", "somethingNew": 1}
    spec = CampaignSpec.from_manifest(manifest)
    assert spec.content["data"]["nested"] == {"any": [1, "two"]}
    assert spec.content["sound"]["name"] == "alarm.caf"


def test_the_crd_declares_exactly_the_notification_fields_a_campaign_sends() -> None:
    crd = yaml.safe_load((ROOT / "crds" / CRD_FILE).read_text())
    (version,) = crd["spec"]["versions"]
    declared = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["notification"]["properties"]
    assert set(declared) == set(CONTENT_FIELDS)


async def test_all_devices_fan_out_queues_each_active_device_once(clean_db: Engine, aredis: aioredis.Redis) -> None:
    _seed(clean_db, 250)
    spec = CampaignSpec.from_manifest(_manifest({"allDevices": True}))
    result = await fan_out(clean_db, aredis, CREDENTIAL, spec, app=APP, chunk_size=64)

    expected = sum(1 for i in range(250) if i % 7 != 3)
    assert (result.total, result.written) == (expected, expected)
    entries = await aredis.xrange(CREDENTIAL.campaign_stream(spec.name))
    messages = [QueuedNotification.decode(fields) for _, fields in entries]
    assert len({m.id for m in messages}) == expected
    assert messages[0].content["thread_id"] == "launch"
    with clean_db.connect() as connection:
        stored = connection.execute(select(func.count()).where(Notification.campaign == "shop/launch")).scalar()
        credentials = connection.execute(select(Notification.credential).distinct()).scalars().all()
    assert stored == expected and credentials == [CREDENTIAL.credential]  # the credential it was queued for
    counters = await aredis.hgetall(campaign_counters(spec.name))
    assert (counters[b"total"], counters[b"queued"]) == (str(expected).encode(), str(expected).encode())
    assert await aredis.smembers(CREDENTIAL.campaigns) == {b"shop/launch"}


async def test_resumed_fan_out_writes_no_second_record(clean_db: Engine, aredis: aioredis.Redis) -> None:
    _seed(clean_db, 100)
    spec = CampaignSpec.from_manifest(_manifest({"allDevices": True}))
    await fan_out(clean_db, aredis, CREDENTIAL, spec, app=APP, chunk_size=30)
    # As if the operator died after writing and queueing a chunk but before saving its cursor.
    starts = sorted(int(start) for start in await aredis.hkeys(CREDENTIAL.campaign_chunks(spec.name)))
    await aredis.hset(campaign_fanout_cursor(spec.name), mapping={"after": starts[1], "done": 0})
    again = await fan_out(clean_db, aredis, CREDENTIAL, spec, app=APP, chunk_size=30)
    assert again.written == 0
    with clean_db.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(Notification)).scalar()
    assert stored == again.total
    assert await aredis.hget(campaign_counters(spec.name), "queued") == str(again.total).encode()
    # ... and no chunk went into the stream a second time.
    assert await _queued_ids(aredis, spec.name) == again.total


async def _queued_ids(aredis: aioredis.Redis, campaign: str) -> int:
    """How many entries the campaign's stream holds, after checking that no record id is in it twice."""
    ids = [
        QueuedNotification.decode(fields).id for _, fields in await aredis.xrange(CREDENTIAL.campaign_stream(campaign))
    ]
    assert len(ids) == len(set(ids)), "a record queued twice"
    return len(ids)


async def test_two_fan_outs_of_one_campaign_queue_each_record_once(clean_db: Engine, aredis: aioredis.Redis) -> None:
    _seed(clean_db, 120)
    spec = CampaignSpec.from_manifest(_manifest({"allDevices": True}))
    # Two operators at once (a second replica, a second release): each chunk is queued by one of them.
    first, second = await asyncio.gather(
        fan_out(clean_db, aredis, CREDENTIAL, spec, app=APP, chunk_size=10),
        fan_out(clean_db, aredis, CREDENTIAL, spec, app=APP, chunk_size=10),
    )
    assert first.total == second.total and first.written + second.written == first.total
    assert await _queued_ids(aredis, spec.name) == first.total
    # One that lost the saved cursor altogether starts over, and still adds nothing.
    await aredis.delete(campaign_fanout_cursor(spec.name))
    await fan_out(clean_db, aredis, CREDENTIAL, spec, app=APP, chunk_size=10)
    assert await _queued_ids(aredis, spec.name) == first.total


async def test_owner_and_inline_token_audiences(clean_db: Engine, aredis: aioredis.Redis) -> None:
    _seed(clean_db, 20)
    owners = CampaignSpec.from_manifest(_manifest({"owners": ["user-1", "user-2", "user-3", "nobody"]}))
    assert (await fan_out(clean_db, aredis, CREDENTIAL, owners, app=APP)).total == 2  # user-3's device is inactive
    unknown_token = "ff" * 32
    inline = CampaignSpec.from_manifest(
        {**_manifest({"deviceTokens": [f"{1:064x}", unknown_token]}), "metadata": {"name": "inline"}}
    )
    result = await fan_out(clean_db, aredis, CREDENTIAL, inline, app=APP)
    assert result.total == 2
    entries = await aredis.xrange(CREDENTIAL.campaign_stream("default/inline"))
    by_token = {m.device_token: m for m in (QueuedNotification.decode(f) for _, f in entries)}
    assert by_token[unknown_token].device_id is None and by_token[f"{1:064x}"].device_id is not None


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_tag_audience_on_both_stores(
    backend: str, clean_db: Engine, aredis: aioredis.Redis, tmp_path: Path
) -> None:
    engine = clean_db
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path}/noti.db")
        migrate.upgrade(engine)
    _seed(engine, 100)
    spec = CampaignSpec.from_manifest(_manifest({"tags": ["vip"]}))
    result = await fan_out(engine, aredis, CREDENTIAL, spec, app=APP)
    expected = sum(1 for i in range(0, 100, 10) if i % 7 != 3)
    assert (result.total, result.written) == (expected, expected)
    with engine.connect() as connection:
        tokens = connection.execute(
            select(Notification.device_token).where(Notification.campaign == spec.name)
        ).scalars().all()  # fmt: skip
    assert len(tokens) == expected
    entries = [QueuedNotification.decode(f) for _, f in await aredis.xrange(CREDENTIAL.campaign_stream(spec.name))]
    assert sorted(e.device_token for e in entries) == sorted(tokens)


async def test_cancel_drops_the_queue_and_closes_unsent_records_in_chunks(
    clean_db: Engine, aredis: aioredis.Redis
) -> None:
    _seed(clean_db, 25)  # 21 of them active
    spec = CampaignSpec.from_manifest(_manifest({"allDevices": True}))
    assert (await fan_out(clean_db, aredis, CREDENTIAL, spec, app=APP, chunk_size=10)).total == 21
    with clean_db.begin() as connection:
        ids = connection.execute(select(Notification.id).order_by(Notification.id).limit(5)).scalars().all()
        records.apply_outcomes(connection, [RecordUpdate(id, NotificationStatus.SENT) for id in ids])

    assert await cancel(clean_db, aredis, spec.name, chunk=7) == 16
    assert await cancel(clean_db, aredis, spec.name, chunk=7) == 0  # safe to repeat
    with clean_db.connect() as connection:
        rows = connection.execute(select(Notification.status, Notification.apns_reason)).all()
        assert records.campaign_counts(connection, spec.name) == {}
    assert sorted(tuple(row) for row in rows) == [("failed", "CampaignDeleted")] * 16 + [("sent", None)] * 5
    assert await aredis.exists(CREDENTIAL.campaign_stream(spec.name), campaign_counters(spec.name),
                               CREDENTIAL.campaign_chunks(spec.name)) == 0  # fmt: skip
    assert await aredis.smembers(CREDENTIAL.campaigns) == set()


# --- Live Activity campaigns: tokens of a kind and attributes type on the audience's devices ---


def _live_manifest(audience: dict[str, Any], name: str, **live: Any) -> dict[str, Any]:
    manifest = _manifest(audience, title="Kick-off", body="The match starts")
    manifest["metadata"] = {"name": name, "namespace": "shop", "uid": f"u-{name}",
                            "creationTimestamp": "2026-12-01T09:00:00Z"}  # fmt: skip
    manifest["spec"]["notification"].pop("threadId")
    manifest["spec"]["liveActivity"] = live
    return manifest


def _seed_tokens(engine: Engine, count: int) -> None:
    """Push-to-start tokens of two attributes types, and an update token per device of the first."""
    with engine.connect() as connection:
        devices = connection.execute(select(Device.id).where(Device.app == APP).order_by(Device.id)).scalars().all()
    with engine.begin() as connection:
        upsert_tokens(connection, [
            *(TokenFields(d, TokenKind.PUSH_TO_START, f"{d:0160x}", "MatchAttributes") for d in devices[:count]),
            *(TokenFields(d, TokenKind.PUSH_TO_START, f"{d + 5000:0160x}", "OtherAttributes") for d in devices[:count]),
            *(TokenFields(d, TokenKind.UPDATE, f"{d + 9000:0160x}", "MatchAttributes", f"match-{d}")
              for d in devices[:count]),
        ])  # fmt: skip


async def test_a_live_activity_start_campaign_reaches_push_to_start_tokens_of_its_type_once(
    clean_db: Engine, aredis: aioredis.Redis
) -> None:
    _seed(clean_db, 60)
    _seed_tokens(clean_db, 40)
    spec = CampaignSpec.from_manifest(
        _live_manifest({"allDevices": True}, "kickoff", event="start", attributesType="MatchAttributes",
                       attributes={"home": "A", "away": "B"}, contentState={"score": "0-0"}, inputPushToken=True)
    )  # fmt: skip
    assert spec.content["push_type"] == "liveactivity" and spec.content["timestamp"] == 1796115600
    result = await fan_out(clean_db, aredis, CREDENTIAL, spec, app=APP, chunk_size=7)
    active = sum(1 for i in range(40) if i % 7 != 3)  # tokens of inactive devices are not reached
    assert (result.total, result.written) == (active, active)
    messages = [QueuedNotification.decode(f) for _, f in await aredis.xrange(CREDENTIAL.campaign_stream(spec.name))]
    assert len({m.id for m in messages}) == active
    assert {m.content["event"] for m in messages} == {"start"}
    assert all(len(m.device_token) == 160 for m in messages)  # the push-to-start tokens, not device tokens
    with clean_db.connect() as connection:
        kinds = connection.execute(
            select(Notification.event, func.count(Notification.token_id)).group_by(Notification.event)
        ).all()
    assert kinds == [("start", active)]
    # A resumed fan-out writes nothing twice.
    await aredis.delete(campaign_fanout_cursor(spec.name))
    assert (await fan_out(clean_db, aredis, CREDENTIAL, spec, app=APP, chunk_size=7)).written == 0


async def test_a_live_activity_end_campaign_ends_every_activity_of_its_type_for_the_audience(
    clean_db: Engine, aredis: aioredis.Redis
) -> None:
    _seed(clean_db, 30)
    _seed_tokens(clean_db, 30)
    spec = CampaignSpec.from_manifest(
        _live_manifest({"tags": ["vip"]}, "final-whistle", event="end", attributesType="MatchAttributes",
                       contentState={"score": "2-1"}, dismissalDate=1796119200)
    )  # fmt: skip
    assert "attributes_type" not in spec.content  # it chose the activities; an end carries no attributes
    result = await fan_out(clean_db, aredis, CREDENTIAL, spec, app=APP)
    vip = [i for i in range(0, 30, 10) if i % 7 != 3]
    assert result.total == len(vip)
    messages = [QueuedNotification.decode(f) for _, f in await aredis.xrange(CREDENTIAL.campaign_stream(spec.name))]
    with clean_db.connect() as connection:
        activities = set(connection.execute(select(Notification.activity_id)).scalars())
    assert {m.content["event"] for m in messages} == {"end"} and len(activities) == len(vip)
    # The ended activities are marked so (as a REST end marks them): a second end campaign reaches none.
    with clean_db.connect() as connection:
        ended = connection.execute(
            select(DeviceToken.activity_id).where(DeviceToken.ended_at.is_not(None)).order_by(DeviceToken.activity_id)
        ).scalars()
        assert set(ended) == activities
    again = CampaignSpec.from_manifest(
        _live_manifest({"tags": ["vip"]}, "second-whistle", event="end", attributesType="MatchAttributes",
                       contentState={"score": "2-1"})
    )  # fmt: skip
    assert (await fan_out(clean_db, aredis, CREDENTIAL, again, app=APP)).total == 0


def test_a_live_activity_campaign_activitykit_could_not_use_is_refused() -> None:
    manifest = _live_manifest({"allDevices": True}, "bad", event="start", attributesType="MatchAttributes")
    with pytest.raises(CampaignError, match="liveActivity"):
        CampaignSpec.from_manifest({**manifest, "spec": {**manifest["spec"], "liveActivity": {"event": "pause"}}})


def test_the_crd_declares_exactly_the_live_activity_fields_a_campaign_sends() -> None:
    crd = yaml.safe_load((ROOT / "crds" / CRD_FILE).read_text())
    (version,) = crd["spec"]["versions"]
    declared = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["liveActivity"]["properties"]
    assert set(declared) == set(LIVE_ACTIVITY_FIELDS)


async def test_fan_out_messages_date_the_records_they_wrote_and_only_those(
    clean_db: Engine, aredis: aioredis.Redis
) -> None:
    _seed(clean_db, 90)
    spec = CampaignSpec.from_manifest(_manifest({"allDevices": True}))
    # As if an operator died after writing the first chunk's records, before queueing them.
    first = _write_chunk(clean_db, spec, APP, CREDENTIAL.credential, 0, 30)
    await fan_out(clean_db, aredis, CREDENTIAL, spec, app=APP, chunk_size=30)
    with clean_db.connect() as connection:
        rows = connection.execute(select(Notification.id, Notification.created_at)).all()
    stored = {row.id: row.created_at for row in rows}
    entries = await aredis.xrange(CREDENTIAL.campaign_stream(spec.name))
    queued = {m.id: m.created_at for m in (QueuedNotification.decode(fields) for _, fields in entries)}
    assert set(queued) == set(stored) and first.written
    # The records the run before wrote keep their own date, which this run does not know: undated.
    assert {id: queued[id] for id in first.written} == dict.fromkeys(first.written)
    later = set(stored) - first.written
    assert later and {id: queued[id] for id in later} == {id: epoch_ms(stored[id]) for id in later}
    # Queued counts what went into the stream, the records the run before wrote among them.
    assert await aredis.hget(campaign_counters(spec.name), "queued") == str(len(stored)).encode()
