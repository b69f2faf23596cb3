"""Broadcast channels in the store, and a broadcast's one delivery record."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, select

from noti.store import tables
from noti.store.records import insert_notifications
from noti.store.tables import NotificationStatus, utcnow

if TYPE_CHECKING:
    from noti.store.models import BroadcastChannel

# The ORM (BroadcastChannel, Session) is imported by the functions that return its objects, for the
# gateway and the operator: a sender only records broadcasts, and never loads it (issue #17).


def add_channel(
    engine: Engine, *, app: str, environment: str, channel_id: str, storage_policy: int, name: str | None = None,
    labels: Mapping[str, str] | None = None, source: str = "api",
) -> BroadcastChannel:  # fmt: skip
    """Keep a channel APNs created (again: the stored one, updated)."""
    channels = tables.broadcast_channels
    with engine.begin() as connection:
        existing = connection.execute(
            select(channels.c.id).where(
                channels.c.app == app, channels.c.environment == environment, channels.c.channel_id == channel_id
            )
        ).scalar()
        values = {"storage_policy": storage_policy, "name": name, "labels": dict(labels or {}), "source": source}
        if existing is None:
            connection.execute(
                channels.insert().values(
                    app=app, environment=environment, channel_id=channel_id, created_at=utcnow(), **values
                )
            )
        else:
            connection.execute(channels.update().where(channels.c.id == existing).values(**values))
    found = get_channel(engine, app, environment, channel_id)
    assert found is not None
    return found


def get_channel(engine: Engine, app: str, environment: str, channel_id: str) -> BroadcastChannel | None:
    from sqlalchemy.orm import Session

    from noti.store.models import BroadcastChannel

    with Session(engine, expire_on_commit=False) as session:
        return session.scalars(
            select(BroadcastChannel).where(
                BroadcastChannel.app == app,
                BroadcastChannel.environment == environment,
                BroadcastChannel.channel_id == channel_id,
            )
        ).first()


def list_channels(
    engine: Engine, *, app: str | None = None, environment: str | None = None, limit: int = 1000
) -> Sequence[BroadcastChannel]:
    """Channels, newest first; of one app and/or environment when given."""
    from sqlalchemy.orm import Session

    from noti.store.models import BroadcastChannel

    query = select(BroadcastChannel).order_by(BroadcastChannel.id.desc()).limit(limit)
    if app is not None:
        query = query.where(BroadcastChannel.app == app)
    if environment is not None:
        query = query.where(BroadcastChannel.environment == environment)
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(query))


def remove_channel(engine: Engine, app: str, environment: str, channel_id: str) -> bool:
    """Forget a channel (APNs deleted it); whether one was stored."""
    channels = tables.broadcast_channels
    with engine.begin() as connection:
        result = connection.execute(
            delete(channels).where(
                channels.c.app == app, channels.c.environment == environment, channels.c.channel_id == channel_id
            )
        )
    return bool(result.rowcount)


def record_broadcast(
    engine: Engine, *, id: uuid.UUID, app: str, channel_id: str, payload: dict[str, Any], priority: int,
    expiration: int | None, status_code: int, reason: str | None, request_id: str | None,
    apns_unique_id: str | None, campaign: str | None = None,
) -> None:  # fmt: skip
    """One delivery record for one broadcast, with APNs' answer (sent, or failed with Apple's reason)."""
    now = utcnow()
    ok = 200 <= status_code < 300
    row = {
        "id": id,
        "device_id": None,
        "device_token": "",  # a broadcast has no device: its channel_id says where it went
        "channel_id": channel_id,
        "app": app,
        "campaign": campaign,
        "data": payload,
        "push_type": "liveactivity",
        "priority": priority,
        "expiration": expiration,
        "status": NotificationStatus.SENT if ok else NotificationStatus.FAILED,
        "status_code": status_code or None,
        "apns_reason": reason,
        "apns_id": request_id,
        "apns_unique_id": apns_unique_id,
        "queued_at": now,
        "sent_at": now if ok else None,
    }
    with engine.begin() as connection:
        insert_notifications(connection, [row])


def broadcast_record(engine: Engine, id: uuid.UUID) -> tuple[str, str | None] | None:
    """A broadcast's record as (status, APNs' reason), or None when it was never sent."""
    with engine.connect() as connection:
        records = tables.notifications.c
        query = select(records.status, records.apns_reason).where(records.id == id)
        row = connection.execute(query).first()
    return (str(row.status), row.apns_reason) if row is not None else None
