"""The store side of a send, in one transaction: read what planning needs, insert what it planned.

A record is durable in the store before its message is on the stream, so a sender never
meets a message without a record. Idempotent sends have ids derived from the API key and
the ``Idempotency-Key`` header; the claim of the key (the ``idempotency_keys`` primary key)
makes two racing requests take turns, and the insert skips an id already stored.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ARRAY, Connection, String, any_, bindparam, func, literal, select

from noti.gateway.errors import invalid
from noti.gateway.sends import (
    KEY_REUSED,
    BulkResult,
    BulkSend,
    Known,
    Send,
    StreamEntries,
    Written,
    bulk_entries,
    first_uses,
    plan_bulk,
    plan_sends,
    reusing,
    settle_sends,
)
from noti.routes import Route
from noti.store import records
from noti.store.models import Device, DeviceOwner, Notification, NotificationStatus, utcnow

_TOKEN_SAFE = re.compile(r"[\x21-\x7e]*")
_DEVICE_COLUMNS = select(Device.id, Device.app, Device.device_token, Device.is_active)
# _one_of for the usual tokens on PostgreSQL, built once for the single-send path.
_DEVICES_BY_TOKENS = _DEVICE_COLUMNS.where(
    Device.device_token == any_(func.string_to_array(bindparam("tokens", type_=String), literal("\x1f")))
)


def _one_of(column: Any, values: Sequence[str], connection: Connection) -> Any:
    """``column IN values``; on PostgreSQL ``= ANY(...)`` with one parameter however many values."""
    if connection.dialect.name != "postgresql":
        return column.in_(values)
    if _TOKEN_SAFE.fullmatch("".join(values)):
        # Printable ASCII: one joined string is far cheaper to send than a 10,000-element array.
        return column == any_(func.string_to_array(bindparam(None, "\x1f".join(values), type_=String), "\x1f"))
    return column == any_(bindparam(None, list(values), type_=ARRAY(String)))


def _statuses(connection: Connection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Known]:
    if not ids:
        return {}
    query = select(Notification.id, Notification.status, Notification.credential).where(Notification.id.in_(ids))
    return {row.id: Known(NotificationStatus(row.status), row.credential) for row in connection.execute(query)}


def _devices_by_token(connection: Connection, tokens: Sequence[str]) -> dict[str, list[Any]]:
    devices: dict[str, list[Any]] = defaultdict(list)
    if not tokens:
        return devices
    if connection.dialect.name == "postgresql" and _TOKEN_SAFE.fullmatch("".join(tokens)):
        found = connection.execute(_DEVICES_BY_TOKENS, {"tokens": "\x1f".join(tokens)})
    else:
        found = connection.execute(_DEVICE_COLUMNS.where(_one_of(Device.device_token, tokens, connection)))
    for device in found:
        devices[device.device_token].append(device)
    return devices


def write_sends(connection: Connection, sends: Sequence[Send], routes: Mapping[str, Route]) -> Written:
    """Write the records of a batch of single sends, each for the credential of its route; call inside a
    transaction."""
    claimed = records.claim_idempotency_keys(connection, first_uses(sends))
    reused = reusing(sends, claimed)
    known = _statuses(
        connection, [s.id for s, refused in zip(sends, reused, strict=True) if s.idempotency_key and not refused]
    )
    tokens = sorted({s.device_token for s, r in zip(sends, reused, strict=True) if not r and s.id not in known})
    plan = plan_sends(sends, reused, known, _devices_by_token(connection, tokens), utcnow(), routes)
    # Only an idempotent send can meet a stored id (a random uuid4 never does): skip the RETURNING path otherwise.
    written = records.insert_notifications(
        connection, [row for row, _ in plan.rows.values()], skip_existing=any(s.idempotency_key for s in sends)
    )
    lost = [id for id in plan.rows if id not in written]  # a concurrent request with the same key won
    return settle_sends(sends, plan, written, {**known, **_statuses(connection, lost)})


def claim_key(connection: Connection, key: str, asked: str) -> None:
    """Claim Idempotency-Key ``key`` (``<API key prefix>:<header>``) for the request of fingerprint ``asked``,
    or find it claimed by the same request before; the 422 when another request used it."""
    if records.claim_idempotency_keys(connection, {key: asked})[key] != asked:
        raise invalid("header.Idempotency-Key", KEY_REUSED)


def replayed_records(connection: Connection, key: str, asked: str) -> list[dict[str, Any]]:
    """Claim ``key`` as :func:`claim_key` does; the records the request wrote when it came before with this
    key (id, device_token, activity_id, in token order), none on its first use. For sends to tokens by
    kind, whose records carry their key. Call in a transaction."""
    claim_key(connection, key, asked)
    query = (
        select(Notification.id, Notification.device_token, Notification.activity_id)
        .where(Notification.idempotency_key == key)
        .order_by(Notification.token_id, Notification.id)
    )
    return [row._asdict() for row in connection.execute(query)]


def write_bulk(
    connection: Connection, bulk: BulkSend, routes: Mapping[str, Route]
) -> tuple[BulkResult, list[StreamEntries]]:
    """Write the records of a bulk send, each for the credential of its route; call inside a transaction."""
    if bulk.idempotency_key is not None and bulk.fingerprint is not None:
        claim_key(connection, bulk.idempotency_key, bulk.fingerprint)
    query = _DEVICE_COLUMNS
    if bulk.tokens is not None:
        query = query.where(_one_of(Device.device_token, list(dict.fromkeys(bulk.tokens)), connection))
    else:
        query = query.add_columns(DeviceOwner.external_id).join(DeviceOwner, Device.owner_id == DeviceOwner.id)
        query = query.where(_one_of(DeviceOwner.external_id, list(dict.fromkeys(bulk.owners or ())), connection))
    if bulk.app is not None:
        query = query.where(Device.app == bulk.app)
    plan = plan_bulk(bulk, connection.execute(query.order_by(Device.id)).all(), utcnow(), routes)
    if plan.fresh_ids:  # the COPY path, every row written
        records.copy_notifications(connection, plan.rows, shared=plan.shared)
        queued = plan.rows
    else:
        rows = [{**plan.shared, **row} for row in plan.rows]
        written = records.insert_notifications(connection, rows, skip_existing=True)
        queued = [row for row in plan.rows if row["id"] in written]
    accepted = [(str(row["id"]), row["device_token"], row["credential"]) for row in plan.rows]
    return BulkResult(accepted, plan.not_found, plan.inactive), bulk_entries(bulk, queued, plan.shared["created_at"])
