"""Single and bulk sends, checked and ready to write, and the pure planning of their writes.

Planning decides, from what the store already holds (claimed idempotency keys, records
with the same id, the devices found), which records to insert, which stream entries to
add and what each request is answered. It does no I/O: ``noti.gateway.writes`` reads
and writes the store around it.

Each send goes to the one credential whose route serves its app and environment
(``noti.routes``); a send no credential serves is refused before anything is written.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from noti.gateway.errors import ApiError, invalid
from noti.gateway.ids import idempotent_id, random_id_strings
from noti.queue import Environment, QueuedNotification, StreamKeys, epoch_ms
from noti.routes import Route, route_field, unserved
from noti.store.content import record_columns
from noti.store.models import NotificationStatus

KEY_REUSED = "this key was used for a different request; a new request needs a new key"


def fingerprint(**request: Any) -> str:
    """A digest of what a request asks for, to tell its retry from another request with its key."""
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Send:
    """One single send, checked and ready to be written."""

    id: uuid.UUID
    device_token: str
    app: str | None  # None: the registered device's app
    environment: Environment
    content: dict[str, Any]
    idempotency_key: str | None = None  # "<API key prefix>:<Idempotency-Key header>"
    fingerprint: str | None = None  # with an idempotency key: what the request asked for
    trace: dict[str, str] | None = None  # the request's trace context, for the sender's span (noti.tracing)


@dataclass(frozen=True, slots=True)
class BulkSend:
    """One bulk send, checked and ready to be written: one content to the devices of tokens or of owners."""

    tokens: Sequence[str] | None  # exactly one of tokens and owners is given
    owners: Sequence[str] | None
    app: str | None  # None: devices of any app
    environment: Environment
    content: dict[str, Any]
    idempotency_key: str | None = None
    fingerprint: str | None = None
    trace: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    id: uuid.UUID
    status: NotificationStatus
    replayed: bool = False  # an Idempotency-Key seen before: nothing new was queued
    credential: str | None = None  # namespace/name of the APNsCredential it was queued for


@dataclass(frozen=True, slots=True)
class Known:
    """A record the store already holds: its status and the credential it was queued for."""

    status: NotificationStatus
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class BulkResult:
    accepted: list[tuple[str, str, str]]  # (record id, device token, credential)
    not_found: list[str]
    inactive: list[str]


@dataclass(slots=True)
class StreamEntries:
    """Entries to add to one stream, and the records they stand for."""

    stream: str
    ids: list[uuid.UUID | str]
    entries: list[dict[str, bytes]]


@dataclass(slots=True)
class Written:
    """What a write did in the store: an answer per send, and the entries still to queue."""

    answers: list[Accepted | Exception]
    entries: list[StreamEntries] = field(default_factory=list)


@functools.lru_cache(maxsize=1024)
def stream_for(credential: str) -> str:
    """The transactional stream of a credential (``namespace/name``)."""
    return StreamKeys(credential).transactional_stream


def route_of(routes: Mapping[str, Route], app: str, environment: Environment) -> Route | ApiError:
    """The route serving ``app`` in ``environment``, or the 422 telling that none does."""
    try:
        route = routes.get(route_field(app, environment))
    except ValueError:  # a device registered before bundle ids were checked
        return invalid("body.app", f"the device's app {app!r} is not a bundle id; register it again")
    if route is None:
        return invalid("body.app", unserved(app, environment))
    return route


def _record(
    id: uuid.UUID | str, token: str, app: str, device_id: int | None, content: Mapping[str, Any], now: datetime,
    credential: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    # Every content column, set or not: the records of a batch are inserted by one statement.
    return {
        "id": id,
        "device_id": device_id,
        "device_token": token,
        "app": app,
        "credential": credential,
        "status": NotificationStatus.QUEUED,
        "queued_at": now,
        # Given, not left to the store: its message carries the same value (records.RecordUpdate.created_at).
        "created_at": now,
        **record_columns(content),
    }


# --- single sends ---


def first_uses(sends: Iterable[Send]) -> dict[str, str]:
    """Each idempotency key of a batch with the fingerprint of the first request using it."""
    first: dict[str, str] = {}
    for send in sends:
        if send.idempotency_key is not None and send.fingerprint is not None:
            first.setdefault(send.idempotency_key, send.fingerprint)
    return first


def reusing(sends: Sequence[Send], claimed: Mapping[str, str]) -> list[bool]:
    """Per send, whether its key was claimed by a different request (``claimed``: key → fingerprint).

    By position, not by id: every request with one key has the same id.
    """
    return [
        s.idempotency_key is not None and claimed.get(s.idempotency_key, s.fingerprint) != s.fingerprint for s in sends
    ]


def resolve(send: Send, devices: Sequence[Any]) -> tuple[str, int | None] | ApiError:
    """The app and device id a single send goes to, or why it cannot go (``devices``: those with its token)."""
    matching = [d for d in devices if send.app is None or d.app == send.app]
    if not matching:
        if send.app is None:
            return invalid(
                "body.device_token", "no device is registered with this token: register it or give app (bundle id)"
            )
        return send.app, None
    if len(matching) > 1:
        return invalid("body.app", "this token is registered for several apps: give app to choose one")
    device = matching[0]
    if not device.is_active:
        return invalid("body.device_token", "the device is inactive (APNs reported its token invalid); not sent")
    return device.app, device.id


@dataclass(slots=True)
class SendPlan:
    """The records a batch of single sends inserts, and the answers decided before the insert."""

    answers: list[Accepted | ApiError | None]  # None: the insert decides (written, or a replay)
    rows: dict[uuid.UUID, tuple[dict[str, Any], Send]]


def plan_sends(
    sends: Sequence[Send],
    reused: Sequence[bool],
    known: Mapping[uuid.UUID, Known],
    devices: Mapping[str, Sequence[Any]],
    now: datetime,
    routes: Mapping[str, Route],
) -> SendPlan:
    """What to insert for ``sends``, given what the store holds (``known`` records with their ids and
    the ``devices`` with their tokens) and the ``routes`` serving apps."""
    plan = SendPlan(answers=[], rows={})
    for send, refused in zip(sends, reused, strict=True):
        if refused:
            plan.answers.append(invalid("header.Idempotency-Key", KEY_REUSED))
            continue
        if send.id in known:
            plan.answers.append(None)
            continue
        if send.id in plan.rows:  # the same idempotent request twice in this batch: the first one queues
            credential = plan.rows[send.id][0]["credential"]
            plan.answers.append(Accepted(send.id, NotificationStatus.QUEUED, replayed=True, credential=credential))
            continue
        target = resolve(send, devices.get(send.device_token, ()))
        if isinstance(target, ApiError):
            plan.answers.append(target)
            continue
        app, device_id = target
        route = route_of(routes, app, send.environment)
        if isinstance(route, ApiError):
            plan.answers.append(route)
            continue
        row = _record(send.id, send.device_token, app, device_id, send.content, now, route.credential)
        plan.rows[send.id] = ({**row, "idempotency_key": send.idempotency_key}, send)
        plan.answers.append(None)
    return plan


def settle_sends(
    sends: Sequence[Send], plan: SendPlan, written: set[uuid.UUID], known: Mapping[uuid.UUID, Known]
) -> Written:
    """Each send's answer once the insert wrote ``written`` (``known``: records stored before, or by a
    concurrent request that won), and the stream entries of what was written."""
    answers: list[Accepted | Exception] = []
    for send, answer in zip(sends, plan.answers, strict=True):
        if answer is not None:
            answers.append(answer)
        elif send.id in written:
            answers.append(Accepted(send.id, NotificationStatus.QUEUED, credential=plan.rows[send.id][0]["credential"]))
        else:
            stored = known.get(send.id, Known(NotificationStatus.QUEUED))
            answers.append(Accepted(send.id, stored.status, replayed=True, credential=stored.credential))
    by_stream: dict[str, StreamEntries] = {}
    for id in written:
        row, send = plan.rows[id]
        stream = stream_for(row["credential"])
        queued = by_stream.get(stream) or by_stream.setdefault(stream, StreamEntries(stream, [], []))
        queued.ids.append(id)
        message = QueuedNotification(
            id, row["device_token"], row["app"], send.content, device_id=row["device_id"], trace=send.trace,
            created_at=epoch_ms(row["created_at"]),
        )  # fmt: skip
        queued.entries.append(message.encode())
    return Written(answers, list(by_stream.values()))


# --- bulk sends ---


@dataclass(slots=True)
class BulkPlan:
    """The records of a bulk send: per device what differs, once what they share."""

    rows: list[dict[str, Any]]  # id, device_id, device_token, app, credential
    shared: dict[str, Any]  # status, queued_at and the content columns
    not_found: list[str]
    inactive: list[str]
    fresh_ids: bool  # random ids: no record can exist yet (the COPY path)


def plan_bulk(
    bulk: BulkSend,
    found: Sequence[Any],
    now: datetime,
    routes: Mapping[str, Route],
    new_ids: Callable[[int], list[str]] = random_id_strings,
) -> BulkPlan:
    """The records for the devices ``found`` (with ``external_id``, their owner's, when the audience is owners),
    each for the credential serving its app; raises the 422 when no credential serves one of the apps."""
    wanted = list(dict.fromkeys(bulk.tokens if bulk.tokens is not None else bulk.owners or ()))
    reached = {row.device_token if bulk.tokens is not None else row.external_id for row in found}
    active = [device for device in found if device.is_active]
    credentials: dict[str, str] = {}
    for app in dict.fromkeys([*([bulk.app] if bulk.app is not None else []), *(d.app for d in active)]):
        route = route_of(routes, app, bulk.environment)
        if isinstance(route, ApiError):  # nothing is written: the whole request is refused
            raise route
        credentials[app] = route.credential
    ids: list[uuid.UUID | str]
    if bulk.idempotency_key is not None:
        ids = [idempotent_id(bulk.idempotency_key, "bulk", f"{d.app}/{d.device_token}") for d in active]
    else:
        ids = list(new_ids(len(active)))
    shared = _record("", "", "", None, bulk.content, now)
    for name in ("id", "device_id", "device_token", "app", "credential"):
        del shared[name]
    return BulkPlan(
        rows=[
            {
                "id": id,
                "device_id": d.id,
                "device_token": d.device_token,
                "app": d.app,
                "credential": credentials[d.app],
            }
            for id, d in zip(ids, active, strict=True)
        ],
        shared=shared,
        not_found=[item for item in wanted if item not in reached],
        inactive=[row.device_token for row in found if not row.is_active],
        fresh_ids=bulk.idempotency_key is None,
    )


def bulk_entries(
    bulk: BulkSend, rows: Sequence[Mapping[str, Any]], created_at: datetime | None = None
) -> list[StreamEntries]:
    """The stream entries of a bulk send's written ``rows`` (created at ``created_at``): one batch per app
    (and its credential), the content encoded once."""
    created_ms = epoch_ms(created_at) if created_at is not None else None
    by_app: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_app[row["app"], row["credential"]].append(row)
    return [
        StreamEntries(
            stream_for(credential),
            [row["id"] for row in app_rows],
            QueuedNotification.encode_many(
                [row["id"] for row in app_rows],
                [row["device_token"] for row in app_rows],
                [row["device_id"] for row in app_rows],
                app=app,
                content=bulk.content,
                trace=bulk.trace,
                created_at=created_ms,
            ),
        )
        for (app, credential), app_rows in by_app.items()
    ]
