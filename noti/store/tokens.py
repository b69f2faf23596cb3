"""Tokens by kind: a device's push-to-start, Live Activity update and VoIP tokens.

A device's device token stays on ``devices``; every other token it holds is a row of
``device_tokens``, one per (device, kind, slot), upserted as the app reports it and
retired by a 410 unless the app registered it again after APNs' timestamp.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from noti.store import tables
from noti.store.db import upsert_insert
from noti.store.tables import TokenKind, utcnow


@dataclass(frozen=True, slots=True)
class TokenFields:
    """What registering a token of a kind stores."""

    device_id: int
    kind: TokenKind
    token: str
    attributes_type: str | None = None  # push-to-start and update tokens
    activity_id: str | None = None  # update tokens

    @property
    def slot(self) -> str:
        """What makes this token one of several of its kind on one device."""
        return slot_of(self.kind, self.attributes_type, self.activity_id)


def slot_of(kind: TokenKind, attributes_type: str | None, activity_id: str | None) -> str:
    """The slot of a token: its attributes type (push-to-start), its activity id (update), or "" (VoIP)."""
    if kind is TokenKind.PUSH_TO_START:
        return attributes_type or ""
    if kind is TokenKind.UPDATE:
        return activity_id or ""
    return ""


def kind_problem(kind: TokenKind, attributes_type: str | None, activity_id: str | None) -> tuple[str, str] | None:
    """(field, why) when a token of ``kind`` lacks what identifies it, or carries what it cannot; None when fine."""
    if kind is TokenKind.PUSH_TO_START:
        if not attributes_type:
            return "attributes_type", "a push-to-start token is for one attributes type: give it"
        if activity_id is not None:
            return "activity_id", "a push-to-start token starts activities; it belongs to none"
    elif kind is TokenKind.UPDATE:
        if not activity_id:
            return "activity_id", "an update token is for one running activity: give its id"
        if not attributes_type:
            return "attributes_type", "give the attributes type of the activity this token updates"
    elif attributes_type is not None or activity_id is not None:
        field = "attributes_type" if attributes_type is not None else "activity_id"
        return field, "a VoIP token belongs to the device, not to a Live Activity"
    return None


@dataclass(frozen=True, slots=True)
class StoredToken:
    """A stored token and whether this call created it."""

    id: int
    created: bool


def upsert_tokens(connection: Connection, tokens: Sequence[TokenFields]) -> list[StoredToken]:
    """Register each token, or replace the one in its (device, kind, slot): one result per token, in order.

    A registration reactivates a retired token and moves its ``registered_at`` on, so a 410
    dated before it is stale; an activity that ended stays ended (its ``ended_at``). Call inside
    a transaction.
    """
    if not tokens:
        return []
    now = utcnow()
    unique = list({(t.device_id, t.kind, t.slot): t for t in tokens}.values())
    keys = [(t.device_id, t.kind.value, t.slot) for t in unique]
    before = _ids(connection, keys)
    statement: Any = upsert_insert(connection.dialect.name, tables.device_tokens)
    changed = ("token", "attributes_type", "activity_id", "is_active", "registered_at", "retired_at", "updated_at")
    statement = statement.on_conflict_do_update(
        index_elements=["device_id", "kind", "slot"], set_={name: statement.excluded[name] for name in changed}
    )
    connection.execute(
        statement,
        [
            {
                "device_id": t.device_id,
                "kind": t.kind,
                "slot": t.slot,
                "token": t.token,
                "attributes_type": t.attributes_type,
                "activity_id": t.activity_id,
                "is_active": True,
                "registered_at": now,
                "retired_at": None,
                "created_at": now,
                "updated_at": now,
            }
            for t in unique
        ],
    )
    after = _ids(connection, keys)
    results, seen = [], set()
    for t in tokens:
        key = (t.device_id, t.kind.value, t.slot)
        results.append(StoredToken(after[key], key not in before and key not in seen))
        seen.add(key)
    return results


def _ids(connection: Connection, keys: Sequence[tuple[int, str, str]]) -> dict[tuple[int, str, str], int]:
    devices = sorted({device for device, _, _ in keys})
    query = select(
        tables.device_tokens.c.id,
        tables.device_tokens.c.device_id,
        tables.device_tokens.c.kind,
        tables.device_tokens.c.slot,
    ).where(tables.device_tokens.c.device_id.in_(devices))
    wanted = set(keys)
    found = {}
    for row in connection.execute(query):
        key = (row.device_id, TokenKind(row.kind).value, row.slot)
        if key in wanted:
            found[key] = row.id
    return found


def end_activities(connection: Connection, token_ids: Sequence[int]) -> None:
    """Mark the activities of update tokens ``token_ids`` ended (an end was sent to them); the first end's
    moment stays. Kept, not deleted: the token and its records stay readable."""
    if not token_ids:
        return
    now = utcnow()
    connection.execute(
        update(tables.device_tokens)
        .where(tables.device_tokens.c.id.in_(sorted(set(token_ids))), tables.device_tokens.c.ended_at.is_(None))
        .values(ended_at=now, updated_at=now)
    )


def retire_tokens(connection: Connection, undated: Sequence[int], dated: Mapping[int, datetime]) -> None:
    """Retire tokens APNs answered 410 for: ``undated`` at once, ``dated`` (id → APNs' timestamp) only
    when the token was registered at or before that moment (a later registration is a new token)."""
    now = utcnow()
    if undated:
        connection.execute(
            update(tables.device_tokens)
            .where(tables.device_tokens.c.id.in_(sorted(set(undated))))
            .values(is_active=False, retired_at=now, updated_at=now)
        )
    if dated:
        statement = (
            update(tables.device_tokens)
            .where(
                tables.device_tokens.c.id == bindparam("b_token"),
                tables.device_tokens.c.registered_at <= bindparam("b_at"),
            )
            .values(is_active=False, retired_at=now, updated_at=now)
        )
        # Sorted, so concurrent writers lock tokens in one order.
        connection.execute(statement, [{"b_token": id, "b_at": at} for id, at in sorted(dated.items())])
