"""Live Activities: which tokens a start, update or end goes to, and the records it writes.

A start goes to push-to-start tokens of one attributes type (of one device, an owner, a tag
or every device); an update or an end goes to the update tokens of one activity, or of
every activity of an attributes type that an owner's devices run. The REST API and
campaigns choose their targets here, so both reach the same tokens.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Select, select

from noti.store import tables
from noti.store.content import record_columns
from noti.store.devices import any_tag, owned_by
from noti.store.tables import NotificationStatus, TokenKind

Event = Literal["start", "update", "end"]


@dataclass(frozen=True, slots=True)
class Targets:
    """Whose tokens a Live Activity push goes to: exactly one way of choosing devices (or activities)."""

    event: Event
    attributes_type: str | None = None
    app: str | None = None  # only devices of this app
    device_tokens: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    all_devices: bool = False
    activity_id: str | None = None  # update and end only

    @property
    def kind(self) -> TokenKind:
        """The kind of token the event is sent to."""
        return TokenKind.PUSH_TO_START if self.event == "start" else TokenKind.UPDATE


def targets_problem(targets: Targets) -> tuple[str, str] | None:
    """(field, why) when ``targets`` do not choose tokens the event can go to, or None."""
    chosen = [
        name
        for name, given in (
            ("device_token", bool(targets.device_tokens)),
            ("owner", bool(targets.owners)),
            ("tag", bool(targets.tags)),
            ("all_devices", targets.all_devices),
            ("activity_id", targets.activity_id is not None),
        )
        if given
    ]
    if targets.event == "start":
        if "activity_id" in chosen:
            return "activity_id", "a start creates an activity: choose devices (device_token, owner, tag, all_devices)"
        if len(chosen) != 1:
            return "device_token", "a start goes to exactly one of device_token, owner, tag or all_devices"
        if not targets.attributes_type:
            return "attributes_type", "a start goes to push-to-start tokens of one attributes type: give it"
        return None
    if chosen == ["activity_id"]:
        return None
    if chosen == ["owner"] and targets.attributes_type:
        return None
    return "activity_id", f"an {targets.event} goes to an activity_id, or to an owner's activities of attributes_type"


TokenRows = Select[int, str, int, str, str | None, datetime | None]


def active_tokens() -> TokenRows:
    """Active tokens of active devices: (token id, token, device id, app, activity id, ended at), the rows
    a send to tokens by kind writes its records from."""
    token, device = tables.device_tokens.c, tables.devices.c
    return (
        select(token.id, token.token, token.device_id, device.app, token.activity_id, token.ended_at)
        .join(tables.devices, token.device_id == device.id)
        .where(token.is_active.is_(True), device.is_active.is_(True))
    )


def token_query(targets: Targets, dialect: str) -> TokenRows:
    """The :func:`active_tokens` ``targets`` reach; activities that ended are left out unless ``targets``
    name one by its id."""
    query = active_tokens().where(tables.device_tokens.c.kind == targets.kind)
    if targets.kind is TokenKind.UPDATE and targets.activity_id is None:
        query = query.where(tables.device_tokens.c.ended_at.is_(None))
    if targets.attributes_type is not None:
        query = query.where(tables.device_tokens.c.attributes_type == targets.attributes_type)
    if targets.app is not None:
        query = query.where(tables.devices.c.app == targets.app)
    if targets.activity_id is not None:
        query = query.where(tables.device_tokens.c.activity_id == targets.activity_id)
    if targets.device_tokens:
        query = query.where(tables.devices.c.device_token.in_(targets.device_tokens))
    if targets.owners:
        query = owned_by(query, targets.owners)
    if targets.tags:
        query = query.where(any_tag(targets.tags, dialect))
    return query


def still_running(targets: Targets, found: Sequence[Any]) -> tuple[list[Any], str | None]:
    """The tokens of ``found`` (rows of :func:`token_query`) the event may go to, and why none may when
    every one is of an activity that ended: an update is refused, an end may be sent again (APNs may
    not have taken the first one; the device ignores an end of an ended activity)."""
    if targets.event != "update":
        return list(found), None
    running = [row for row in found if row.ended_at is None]
    if found and not running:
        return [], f"activity {targets.activity_id!r} has ended (an end was sent to it): it takes no more updates"
    return running, None


def record_rows(
    targets: Sequence[Any],
    content: Mapping[str, Any],
    ids: Sequence[uuid.UUID],
    now: datetime,
    campaign: str | None = None,
    credentials: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The delivery records of one Live Activity push to each of ``targets`` (rows of :func:`token_query`),
    each for the credential ``credentials`` names for its app."""
    columns = record_columns(content)
    credentials = credentials or {}
    return [
        {
            "id": id,
            "device_id": target.device_id,
            "token_id": target.id,
            "device_token": target.token,
            "app": target.app,
            "credential": credentials.get(target.app),
            "campaign": campaign,
            "event": content.get("event"),
            "activity_id": target.activity_id,
            "status": NotificationStatus.QUEUED,
            "queued_at": now,
            "created_at": now,  # given, so that its message can carry it (QueuedNotification.created_at)
            **columns,
        }
        for id, target in zip(ids, targets, strict=True)
    ]
