"""The batched write path for devices: register or update many by (app, token), their owners with them.

One statement for the owners and one for the devices per batch on PostgreSQL (``unnest`` of
one array per column), so importing an audience costs database work, not round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from sqlalchemy import ARRAY, ColumnElement, Connection, Select, String, cast, exists, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import array

from noti.store import tables
from noti.store.db import upsert_insert
from noti.store.tables import Platform, utcnow

Q = TypeVar("Q", bound=Select)


def owned_by(query: Q, owners: Sequence[str]) -> Q:
    """``query`` (over devices) narrowed to the active owners ``owners`` (their external ids)."""
    return query.join(tables.device_owners, tables.devices.c.owner_id == tables.device_owners.c.id).where(
        tables.device_owners.c.external_id.in_(owners), tables.device_owners.c.is_active.is_(True)
    )


def any_tag(tags: Sequence[str], dialect: str) -> ColumnElement[bool]:
    """A WHERE clause: the device carries at least one of ``tags`` (JSONB ?| on PostgreSQL, json_each on SQLite)."""
    if dialect == "postgresql":
        return tables.devices.c.tags.op("?|")(cast(array(list(tags)), ARRAY(String)))
    values = func.json_each(tables.devices.c.tags).table_valued("value")
    return exists(select(1).select_from(values).where(values.c.value.in_(tags)))


# SQLite binds at most 32,766 variables per statement; lookups by key stay well below.
_SQLITE_CHUNK = 2_000


@dataclass(frozen=True, slots=True)
class DeviceFields:
    """What registering a device stores: the same for one device or ten thousand."""

    app: str
    device_token: str
    platform: Platform = Platform.IOS
    owner: str | None = None  # the owner's external id; a new one creates the owner
    tags: list[str] = field(default_factory=list)
    is_active: bool = True


@dataclass(frozen=True, slots=True)
class Registered:
    """A stored device: its id, and whether this call created it (rather than updated it)."""

    id: int
    created: bool


# Each batch travels as one JSON document that PostgreSQL takes apart (json_to_recordset): an
# array parameter per column would have psycopg quote every value in Python (a third of the
# gateway's CPU per device).
_PG_OWNERS = text(
    """
    INSERT INTO device_owners (external_id, is_active, created_at, updated_at)
    SELECT external_id, true, :now, :now FROM json_array_elements_text(CAST(:owners AS json)) AS v(external_id)
     ORDER BY external_id COLLATE "C"
    ON CONFLICT (external_id) DO NOTHING
    """
)
# The owners are looked up by the batch's external ids (an index scan), not joined as a table:
# a hash join would read every owner, a million of them for ten thousand devices. Rows are
# upserted in key order, so concurrent imports lock them in the same order and never deadlock
# (bytewise: any order will do, and a locale's collation costs far more to sort by).
# xmax is 0 on a row this statement inserted and the upserting transaction's id on one it updated.
_PG_DEVICES = text(
    """
    WITH v AS (
        SELECT * FROM json_to_recordset(CAST(:devices AS json))
            AS v(a varchar, t varchar, p varchar, o varchar, g jsonb, i boolean)
    ), o AS (
        SELECT id, external_id FROM device_owners
         WHERE external_id = ANY(ARRAY(SELECT json_array_elements_text(CAST(:owners AS json))))
    )
    INSERT INTO devices (app, device_token, platform, owner_id, tags, is_active, created_at, updated_at,
                         registered_at)
    SELECT v.a, v.t, v.p, o.id, v.g, v.i, :now, :now, :now
      FROM v LEFT JOIN o ON o.external_id = v.o
     ORDER BY v.a COLLATE "C", v.t COLLATE "C"
    ON CONFLICT (app, device_token) DO UPDATE
       SET platform = excluded.platform, owner_id = excluded.owner_id, tags = excluded.tags,
           is_active = excluded.is_active, updated_at = excluded.updated_at,
           registered_at = excluded.registered_at  -- a re-registration outdates an earlier 410
    RETURNING id, app, device_token, xmax = 0 AS created
    """
)


def upsert_devices(connection: Connection, devices: Sequence[DeviceFields]) -> list[Registered]:
    """Register each device, or update the one with its (app, token); one result per device, in order.

    Owners named for the first time are created. A key given twice takes the last one's
    fields; only its first mention counts as created. Call inside a transaction.
    """
    if not devices:
        return []
    # One row per key: a statement may not upsert a row twice.
    unique = list({(d.app, d.device_token): d for d in devices}.values())
    owners = sorted({d.owner for d in unique if d.owner is not None})
    if connection.dialect.name == "postgresql":
        stored = _upsert_postgresql(connection, unique, owners)
    else:
        stored = _upsert_generic(connection, unique, owners)
    results = []
    seen: set[tuple[str, str]] = set()
    for device in devices:
        key = (device.app, device.device_token)
        id, created = stored[key]
        results.append(Registered(id, created and key not in seen))
        seen.add(key)
    return results


def _upsert_postgresql(
    connection: Connection, devices: list[DeviceFields], owners: list[str]
) -> dict[tuple[str, str], tuple[int, bool]]:
    now = utcnow()
    owner_list = orjson.dumps(owners).decode()
    if owners:
        connection.execute(_PG_OWNERS, {"owners": owner_list, "now": now})
    rows = [
        {"a": d.app, "t": d.device_token, "p": d.platform.value, "o": d.owner, "g": d.tags, "i": d.is_active}
        for d in devices
    ]
    values = {"devices": orjson.dumps(rows).decode(), "owners": owner_list, "now": now}
    return {(app, token): (id, created) for id, app, token, created in connection.execute(_PG_DEVICES, values).all()}


def _upsert_generic(
    connection: Connection, devices: list[DeviceFields], owners: list[str]
) -> dict[tuple[str, str], tuple[int, bool]]:
    now = utcnow()
    owner_ids: dict[str, int] = {}
    if owners:
        rows = [{"external_id": o, "is_active": True, "created_at": now, "updated_at": now} for o in owners]
        connection.execute(
            upsert_insert("sqlite", tables.device_owners).on_conflict_do_nothing(index_elements=["external_id"]), rows
        )
        for start in range(0, len(owners), _SQLITE_CHUNK):
            chunk = owners[start : start + _SQLITE_CHUNK]
            found = select(tables.device_owners.c.external_id, tables.device_owners.c.id).where(
                tables.device_owners.c.external_id.in_(chunk)
            )
            owner_ids.update({row.external_id: row.id for row in connection.execute(found)})
    statement: Any = upsert_insert("sqlite", tables.devices)
    changed = ("platform", "owner_id", "tags", "is_active", "updated_at", "registered_at")
    statement = statement.on_conflict_do_update(
        index_elements=["app", "device_token"], set_={name: statement.excluded[name] for name in changed}
    )
    rows = [
        {
            "app": d.app,
            "device_token": d.device_token,
            "platform": d.platform,
            "owner_id": owner_ids[d.owner] if d.owner is not None else None,
            "tags": d.tags,
            "is_active": d.is_active,
            "created_at": now,
            "updated_at": now,
            "registered_at": now,  # a re-registration outdates an earlier 410 (noti.store.records)
        }
        for d in devices
    ]
    connection.execute(statement, rows)
    # A row this call inserted has both times from ``now``; one it updated was created before.
    created = (tables.devices.c.created_at == tables.devices.c.updated_at).label("created")
    keys = [(d.app, d.device_token) for d in devices]
    stored: dict[tuple[str, str], tuple[int, bool]] = {}
    for start in range(0, len(keys), _SQLITE_CHUNK):
        key = tuple_(tables.devices.c.app, tables.devices.c.device_token)
        query = select(tables.devices.c.app, tables.devices.c.device_token, tables.devices.c.id, created).where(
            key.in_(keys[start : start + _SQLITE_CHUNK])
        )
        stored.update({(row.app, row.device_token): (row.id, bool(row.created)) for row in connection.execute(query)})
    return stored
