"""NotificationCampaign fan-out: a manifest's audience → delivery records and a campaign stream.

The operator runs this in the cluster and ``noti campaign run`` runs it locally; both go
through :func:`fan_out`. Devices are read in chunks ordered by id and a cursor kept in
Redis, so a restarted fan-out resumes where it stopped. Record ids are derived from the
campaign and the device, so a chunk done twice writes each record once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import Connection, Engine, Select, delete, func, select, tuple_

from noti.live_activities import Targets, record_rows, token_query
from noti.queue import (
    XADD_CHUNK,
    CampaignProgress,
    QueuedNotification,
    StreamKeys,
    campaign_counters,
    campaign_fanout_cursor,
    campaign_settings,
    epoch_ms,
    pack_entries,
)
from noti.store import records, tables
from noti.store.content import record_columns
from noti.store.devices import any_tag, owned_by
from noti.store.records import RecordUpdate
from noti.store.tables import FINAL_STATUSES, NotificationStatus, utcnow
from noti.store.tokens import end_activities

API_VERSION = "noti.dev/v1alpha1"
KIND = "NotificationCampaign"
CRD_FILE = "notificationcampaigns.noti.dev.yaml"  # in crds/: the schema manifests are checked against
# camelCase manifest field → notification field (the names the store and the APNs payload use)
CONTENT_FIELDS = {
    "title": "title",
    "subtitle": "subtitle",
    "body": "body",
    "badge": "badge",
    "sound": "sound",
    "category": "category",
    "threadId": "thread_id",
    "data": "data",
    "pushType": "push_type",
    "priority": "priority",
    "expiration": "expiration",
    "collapseId": "collapse_id",
    "interruptionLevel": "interruption_level",
    "mutableContent": "mutable_content",
}
# camelCase spec.liveActivity field → notification field
LIVE_ACTIVITY_FIELDS = {
    "event": "event",
    "attributesType": "attributes_type",
    "attributes": "attributes",
    "contentState": "content_state",
    "staleDate": "stale_date",
    "dismissalDate": "dismissal_date",
    "relevanceScore": "relevance_score",
    "inputPushToken": "input_push_token",
    "inputPushChannel": "input_push_channel",
}
_RECORD_NAMESPACE = uuid.UUID("6f1c2d4e-8a7b-4c3d-9e0f-a1b2c3d4e5f6")


class CampaignError(ValueError):
    """A manifest that cannot be run; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Audience:
    """Exactly one way of choosing the devices a campaign reaches."""

    all_devices: bool = False
    owners: tuple[str, ...] = ()  # the owner each device was registered with (``owner`` in the API)
    tags: tuple[str, ...] = ()
    device_tokens: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Audience:
        """The audience of a manifest's ``spec.audience`` (``ownerExternalIds`` is the earlier name of ``owners``)."""
        chosen = [
            name
            for name in ("allDevices", "owners", "ownerExternalIds", "tags", "deviceTokens")
            if (spec.get(name) if name == "allDevices" else name in spec)
        ]
        if len(chosen) != 1:
            raise CampaignError(
                "spec.audience needs exactly one of allDevices: true, owners, tags, deviceTokens"
                + (f" (got {', '.join(chosen)})" if chosen else "")
            )
        return cls(
            all_devices=bool(spec.get("allDevices")),
            owners=tuple(spec.get("owners", spec.get("ownerExternalIds", ()))),
            tags=tuple(spec.get("tags", ())),
            device_tokens=tuple(token.lower() for token in spec.get("deviceTokens", ())),
        )


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """What a NotificationCampaign asks for, checked."""

    name: str  # namespace/name
    credential: str  # name of the APNsCredential in the same namespace
    content: dict[str, Any]
    audience: Audience
    rate_per_second: int = 1000
    start_at: datetime | None = None
    suspend: bool = False
    uid: str = ""
    # spec.liveActivity: a start to push-to-start tokens, or an update or end of running activities
    live_activity: Targets | None = None

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> CampaignSpec:
        """Parse and check a NotificationCampaign manifest (as ``kubectl apply`` would take it)."""
        if not isinstance(manifest, dict):
            raise CampaignError("the manifest must be a YAML mapping")
        if manifest.get("kind") != KIND or manifest.get("apiVersion") != API_VERSION:
            raise CampaignError(f"expected kind: {KIND} and apiVersion: {API_VERSION}")
        from noti import crd_schema  # jsonschema and yaml: ~10 MB a sender, which never validates a manifest

        wrong = crd_schema.problems(manifest, CRD_FILE, API_VERSION.rpartition("/")[2])
        if wrong:
            raise CampaignError("; ".join(wrong))
        metadata, spec = manifest["metadata"], manifest["spec"]
        if "broadcast" in spec:
            raise CampaignError(
                "spec.broadcast: a broadcast campaign goes to a channel at APNs; the operator runs it in a cluster "
                "(POST /api/broadcasts/ does the same through a gateway)"
            )
        content = {CONTENT_FIELDS[key]: value for key, value in spec["notification"].items()}
        live_activity = None
        if "liveActivity" in spec:
            content = _live_activity_content(content, spec["liveActivity"], metadata.get("creationTimestamp"))
            live_activity = Targets(event=content["event"], attributes_type=spec["liveActivity"]["attributesType"])
        start_at = spec.get("startAt")
        if isinstance(start_at, str):
            try:
                start_at = datetime.fromisoformat(start_at.replace("Z", "+00:00"))
            except ValueError:
                raise CampaignError(f"spec.startAt: not an RFC 3339 time: {start_at!r}") from None
        if isinstance(start_at, datetime) and start_at.tzinfo is None:
            start_at = start_at.replace(tzinfo=UTC)
        return cls(
            name=f"{metadata.get('namespace') or 'default'}/{metadata['name']}",
            credential=spec["credentialRef"]["name"],
            content=content,
            audience=Audience.from_spec(spec["audience"]),
            rate_per_second=spec.get("ratePerSecond", 1000),
            start_at=start_at,
            suspend=bool(spec.get("suspend", False)),
            uid=str(metadata.get("uid") or ""),
            live_activity=live_activity,
        )

    def record_id(self, device_key: str) -> uuid.UUID:
        """The delivery record id of this campaign for one device (stable across restarts)."""
        return uuid.uuid5(_RECORD_NAMESPACE, f"{self.name}/{self.uid}/{device_key}")


def _live_activity_content(content: dict[str, Any], live: dict[str, Any], created: Any) -> dict[str, Any]:
    """The notification of a Live Activity campaign: its liveActivity fields, stamped with the campaign's
    creation (ActivityKit ignores a push older than the last one it took, so a resumed fan-out's are alike)."""
    values = {**content, "push_type": "liveactivity"}
    values.update({LIVE_ACTIVITY_FIELDS[key]: value for key, value in live.items()})
    if values["event"] != "start":  # the attributes type chose the activities; it is no update key
        values.pop("attributes_type", None)
    stamp = datetime.now(UTC)
    if isinstance(created, str):
        with contextlib.suppress(ValueError):
            stamp = datetime.fromisoformat(created.replace("Z", "+00:00"))
    elif isinstance(created, datetime):
        stamp = created
    values.setdefault("timestamp", int(stamp.timestamp()))
    return values


def _targets(spec: CampaignSpec, app: str) -> Targets:
    """The tokens a Live Activity campaign reaches: those of its kind and attributes type on the audience's devices."""
    assert spec.live_activity is not None
    audience = spec.audience
    return replace(
        spec.live_activity,
        app=app,
        device_tokens=audience.device_tokens,
        owners=audience.owners,
        tags=audience.tags,
        all_devices=audience.all_devices,
    )


def _device_query(app: str, audience: Audience, dialect: str) -> Select[int, str]:
    query = select(tables.devices.c.id, tables.devices.c.device_token).where(
        tables.devices.c.app == app, tables.devices.c.is_active.is_(True)
    )
    if audience.owners:
        query = owned_by(query, audience.owners)
    elif audience.tags:
        query = query.where(any_tag(audience.tags, dialect))
    elif audience.device_tokens:
        query = query.where(tables.devices.c.device_token.in_(audience.device_tokens))
    return query


def count_audience(connection: Connection, app: str, audience: Audience, spec: CampaignSpec | None = None) -> int:
    """How many notifications the campaign will write (for a Live Activity ``spec``: how many tokens it reaches)."""
    if spec is not None and spec.live_activity is not None:
        tokens = token_query(_targets(spec, app), connection.dialect.name).subquery()
        return int(connection.execute(select(func.count()).select_from(tokens)).scalar_one())
    if audience.device_tokens:
        return len(set(audience.device_tokens))
    query = _device_query(app, audience, connection.dialect.name).with_only_columns(func.count())
    return int(connection.execute(query).scalar_one())


def _next_chunk(
    connection: Connection, app: str, audience: Audience, after: int, limit: int
) -> list[tuple[int | None, str, int]]:
    """(device id, token, cursor position) of the next devices after cursor position ``after``."""
    if audience.device_tokens:
        # Inline tokens go out whether or not the device is registered; the cursor is the list index.
        tokens = sorted(set(audience.device_tokens))[after : after + limit]
        known = dict(
            connection.execute(
                select(tables.devices.c.device_token, tables.devices.c.id).where(
                    tables.devices.c.app == app, tables.devices.c.device_token.in_(tokens)
                )
            ).all()
        )
        return [(known.get(token), token, after + i + 1) for i, token in enumerate(tokens)]
    query = _device_query(app, audience, connection.dialect.name)
    rows = connection.execute(query.where(tables.devices.c.id > after).order_by(tables.devices.c.id).limit(limit)).all()
    return [(row.id, row.device_token, row.id) for row in rows]


def _records(
    spec: CampaignSpec, app: str, credential: str, chunk: Sequence[tuple[int | None, str, int]]
) -> list[dict[str, Any]]:
    now = utcnow()
    columns = record_columns(spec.content)
    return [
        {
            "id": spec.record_id(str(device_id) if device_id is not None else token),
            "device_id": device_id,
            "device_token": token,
            "app": app,
            "campaign": spec.name,
            "credential": credential,
            "status": NotificationStatus.QUEUED,
            "queued_at": now,
            "created_at": now,  # given, so that its message can carry it (QueuedNotification.created_at)
            **columns,
        }
        for device_id, token, _ in chunk
    ]


@dataclass(frozen=True, slots=True)
class FanOutResult:
    total: int
    written: int  # records written by this run (fewer than total when resuming)


async def fan_out(
    engine: Engine,
    redis: aioredis.Redis,
    credential: StreamKeys,
    spec: CampaignSpec,
    *,
    app: str,
    chunk_size: int = 1000,
) -> FanOutResult:
    """Write the campaign's records (the devices of ``app``) and queue them on its stream in ``credential``'s
    queues (its ``credentialRef``), resuming from the saved cursor."""
    cursor_key = campaign_fanout_cursor(spec.name)
    stream = credential.campaign_stream(spec.name)
    # Where its queue lives goes with its settings, so that a delete finds it when the credential is gone.
    await redis.hset(campaign_settings(spec.name), mapping={
        "rate": spec.rate_per_second, "suspend": int(spec.suspend), "stream": stream, "roster": credential.campaigns,
        "chunks": credential.campaign_chunks(spec.name), "credential": credential.credential,
    })  # fmt: skip
    total = await asyncio.to_thread(_count, engine, app, spec)
    await redis.hset(campaign_counters(spec.name), "total", total)
    await redis.sadd(credential.campaigns, spec.name)
    state = await redis.hgetall(cursor_key)
    if state.get(b"done") == b"1":
        return FanOutResult(total=total, written=0)
    after = int(state.get(b"after", 0))
    written = 0
    xadd_chunk = redis.register_script(XADD_CHUNK)

    def write(start: int) -> asyncio.Task[_Chunk]:
        return asyncio.ensure_future(
            asyncio.to_thread(_write_chunk, engine, spec, app, credential.credential, start, chunk_size)
        )

    # The next chunk's records are written while this one is queued: the store and Redis work at once.
    # Records are idempotent, so one written ahead and then not queued (a crash, a chunk another fan-out
    # queued with another end) is written again, as nothing, by the run that queues it.
    ahead = write(after)
    try:
        while True:
            chunk = await ahead
            if not chunk.rows:
                break
            ahead = write(chunk.cursor)
            end = await _queue_chunk(redis, xadd_chunk, credential, spec, app, chunk, after)
            written += len(chunk.written)
            if end != chunk.cursor:  # another fan-out queued this chunk, up to another end: go on from there
                written += len((await ahead).written)  # written all the same: the other one skips them
                ahead = write(end)
            after = end
    finally:
        if not ahead.done():
            ahead.cancel()  # its thread finishes its transaction; nothing of it is queued
            await asyncio.gather(ahead, return_exceptions=True)
    await redis.hset(cursor_key, "done", 1)
    return FanOutResult(total=total, written=written)


async def _queue_chunk(
    redis: aioredis.Redis, xadd_chunk: Any, credential: StreamKeys, spec: CampaignSpec, app: str, chunk: _Chunk,
    after: int,
) -> int:  # fmt: skip
    """Put a written chunk on the campaign's stream (unless it is there already) and save the cursor after it;
    returns the end the chunk has (another fan-out's, when that one queued it first)."""
    stream = credential.campaign_stream(spec.name)
    entries = QueuedNotification.encode_many(
        [row["id"] for row in chunk.rows],
        [row["device_token"] for row in chunk.rows],
        [row["device_id"] for row in chunk.rows],
        app=app,
        content=spec.content,
        campaign=spec.name,
        # Only a record this run wrote is known to be dated so: one a run before wrote has its own date.
        created_at=[epoch_ms(row["created_at"]) if row["id"] in chunk.written else None for row in chunk.rows],
    )
    # Atomic and at most once per chunk: a second fan-out of the same campaign (another operator, a
    # resumed run) finds the chunk queued and goes on from where that one ended.
    added, end = await xadd_chunk(
        keys=[stream, credential.campaign_chunks(spec.name)], args=[after, chunk.cursor, pack_entries(entries)]
    )
    async with redis.pipeline(transaction=False) as pipe:
        if added:  # what went into the stream, whichever run wrote the records
            pipe.hincrby(campaign_counters(spec.name), "queued", int(added))
        pipe.hset(campaign_fanout_cursor(spec.name), "after", int(end))
        await pipe.execute()
    return int(end)


@dataclass(frozen=True, slots=True)
class _Chunk:
    rows: list[dict[str, Any]]
    written: set[uuid.UUID]
    cursor: int


def _count(engine: Engine, app: str, spec: CampaignSpec) -> int:
    with engine.connect() as connection:
        return count_audience(connection, app, spec.audience, spec)


def _live_activity_chunk(
    connection: Connection, spec: CampaignSpec, app: str, credential: str, after: int, limit: int
) -> _Chunk:
    """The next tokens of a Live Activity campaign, by token id, and their records."""
    query = token_query(_targets(spec, app), connection.dialect.name)
    found = connection.execute(
        query.where(tables.device_tokens.c.id > after).order_by(tables.device_tokens.c.id).limit(limit)
    ).all()
    if not found:
        return _Chunk([], set(), after)
    ids = [spec.record_id(f"token/{row.id}") for row in found]
    rows = record_rows(found, spec.content, ids, utcnow(), campaign=spec.name, credentials={app: credential})
    written = records.insert_notifications(connection, rows, skip_existing=True)
    if spec.live_activity is not None and spec.live_activity.event == "end":  # as the REST end does
        end_activities(connection, [row.id for row in found])
    return _Chunk(rows, written, found[-1].id)


def _write_chunk(engine: Engine, spec: CampaignSpec, app: str, credential: str, after: int, limit: int) -> _Chunk:
    with engine.begin() as connection:
        if spec.live_activity is not None:
            return _live_activity_chunk(connection, spec, app, credential, after, limit)
        devices = _next_chunk(connection, app, spec.audience, after, limit)
        if not devices:
            return _Chunk([], set(), after)
        rows = _records(spec, app, credential, devices)
        written = records.insert_notifications(connection, rows, skip_existing=True, writer=f"campaign:{spec.name}")
        return _Chunk(rows, written, devices[-1][2])


async def progress(engine: Engine, redis: aioredis.Redis, campaign: str) -> CampaignProgress:
    """A campaign's progress: written and queued from Redis, finished from the store."""
    counters = await redis.hgetall(campaign_counters(campaign))
    finished = await asyncio.to_thread(_campaign_counts, engine, campaign)
    return CampaignProgress.parse(counters, finished)


def _campaign_counts(engine: Engine, campaign: str) -> dict[str, int]:
    with engine.connect() as connection:
        return records.campaign_counts(connection, campaign)


CANCELLED = "CampaignDeleted"  # apns_reason of the records a deleted campaign leaves unsent


async def cancel(
    engine: Engine, redis: aioredis.Redis, campaign: str, credential: StreamKeys | None = None, *, chunk: int = 1000
) -> int:
    """Stop a campaign for good: its queue goes, its unsent records become ``failed``
    (reason ``CampaignDeleted``), its counts go. Returns how many records it closed.

    Its queue is found where its fan-out noted it, so this needs no credential: a campaign
    deleted after its credential leaves nothing to be delivered later. Sent records stay, as
    history. Safe to repeat.
    """
    stored: dict[bytes, bytes] = await redis.hgetall(campaign_settings(campaign))  # type: ignore[assignment]
    noted = {k.decode(): v.decode() for k, v in stored.items()}
    roster = noted.get("roster") or (credential.campaigns if credential else None)
    queue_keys = [noted.get("stream"), noted.get("chunks")]
    if credential is not None:
        queue_keys += [credential.campaign_stream(campaign), credential.campaign_chunks(campaign)]
    if roster:
        await redis.srem(roster, campaign)  # senders stop reading it first
    await redis.delete(
        *{key for key in queue_keys if key},
        campaign_settings(campaign),
        campaign_counters(campaign),
        campaign_fanout_cursor(campaign),
    )
    return await asyncio.to_thread(_close_records, engine, campaign, chunk)


def _close_records(engine: Engine, campaign: str, chunk: int = 1000) -> int:
    closed = 0
    after: tuple[datetime, uuid.UUID] | None = None  # walked in (created_at, id) order, each record read once
    while True:
        query = select(
            tables.notifications.c.id, tables.notifications.c.created_at, tables.notifications.c.status
        ).where(tables.notifications.c.campaign == campaign)
        if after is not None:
            query = query.where(tuple_(tables.notifications.c.created_at, tables.notifications.c.id) > tuple_(*after))
        with engine.begin() as connection:
            rows = connection.execute(
                query.order_by(tables.notifications.c.created_at, tables.notifications.c.id).limit(chunk)
            ).all()
            outcomes = [
                RecordUpdate(row.id, NotificationStatus.FAILED, apns_reason=CANCELLED, created_at=row.created_at)
                for row in rows
                if row.status not in FINAL_STATUSES
            ]
            closed += len(records.apply_outcomes(connection, outcomes))
        if len(rows) < chunk:
            break
        after = (rows[-1].created_at, rows[-1].id)
    with engine.begin() as connection:
        connection.execute(delete(tables.campaign_counts).where(tables.campaign_counts.c.campaign == campaign))
    return closed
