"""The send path: write delivery records, then add them to the credential's transactional stream.

A record is durable in the store before its message is on the stream, so a sender never
meets a message without a record. Concurrent single sends are coalesced: whatever arrived
while the previous batch was being written goes out as one insert and one Redis pipeline,
and each request is answered once both are done. Idempotent sends get an id derived from
the API key and the ``Idempotency-Key`` header, so the insert itself (conflict on the
primary key) decides which of two racing requests queues the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from sqlalchemy import ARRAY, Connection, Engine, String, any_, bindparam, func, literal, select

from noti.campaigns import RECORD_COLUMNS
from noti.gateway.errors import ApiError, invalid
from noti.queue import XADD_MANY, StreamKeys, Environment, QueuedNotification, pack_entries
from noti.store import records
from noti.store.models import Device, DeviceOwner, Notification, NotificationStatus, utcnow
from noti.store.records import RecordUpdate

_TOKEN_SAFE = re.compile(r"[\x21-\x7e]*")
_IDEMPOTENCY_NAMESPACE = uuid.UUID("0b7c3f52-2d1e-4f8a-9c6b-5e4d3a2b1c0f")


def idempotent_id(scope: str, key: str, item: str = "") -> uuid.UUID:
    """The record id for a request with an Idempotency-Key (``scope`` keeps API keys apart)."""
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{scope}\x00{key}\x00{item}")


def fingerprint(**request: Any) -> str:
    """A digest of what a request asks for, to tell its retry from another request with its key."""
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()


_KEY_REUSED = "this key was used for a different request; a new request needs a new key"


def random_ids(count: int) -> list[uuid.UUID]:
    """``count`` random (version 4) UUIDs from one read of the system's randomness."""
    raw = os.urandom(16 * count)
    return [uuid.UUID(bytes=raw[i : i + 16], version=4) for i in range(0, 16 * count, 16)]


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def random_id_strings(count: int) -> list[str]:
    """``count`` random version 4 UUIDs in their text form, built as text (a bulk send needs
    10,000, and a UUID object per id costs more than the rest of its record's formatting)."""
    raw = os.urandom(16 * count).hex()
    return [
        f"{raw[i : i + 8]}-{raw[i + 8 : i + 12]}-4{raw[i + 13 : i + 16]}-"
        f"{_VARIANT[raw[i + 16]]}{raw[i + 17 : i + 20]}-{raw[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


_spare_ids: list[uuid.UUID] = []


def new_id() -> uuid.UUID:
    """A random record id; drawn 256 at a time, since each read of os.urandom is a system call."""
    if not _spare_ids:
        _spare_ids.extend(random_ids(256))
    return _spare_ids.pop()


@dataclass(frozen=True, slots=True)
class Send:
    """One single send, checked and ready to be written."""

    id: uuid.UUID
    device_token: str
    app: str | None  # None: the registered device's app
    environment: Environment
    content: dict[str, Any]
    idempotency_key: str | None = None
    fingerprint: str | None = None  # with an idempotency key: what the request asked for


@dataclass(frozen=True, slots=True)
class Accepted:
    id: uuid.UUID
    status: NotificationStatus
    replayed: bool = False  # an Idempotency-Key seen before: nothing new was queued


@dataclass(slots=True)
class _Entries:
    """Stream entries to add to one stream, and the records they stand for."""

    stream: str
    ids: list[uuid.UUID | str]
    entries: list[dict[str, bytes]]


@dataclass(slots=True)
class _Written:
    """What a batch did in the store: answers per send, messages still to queue."""

    answers: list[Accepted | ApiError]
    messages: list[_Entries] = field(default_factory=list)


def _record(
    id: uuid.UUID, token: str, app: str, device_id: int | None, content: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    columns = {name: content[name] for name in RECORD_COLUMNS if content.get(name) is not None}
    return {
        "id": id,
        "device_id": device_id,
        "device_token": token,
        "app": app,
        "status": NotificationStatus.QUEUED,
        "queued_at": utcnow(),
        **columns,
        **extra,
    }


def _resolve(send: Send, devices: Sequence[Any]) -> tuple[str, int | None] | ApiError:
    """The app and device id a single send goes to, or why it cannot go."""
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


def _one_of(column: Any, values: Sequence[str], connection: Connection) -> Any:
    """``column IN values``; on PostgreSQL ``= ANY(...)`` with one parameter however many values."""
    if connection.dialect.name != "postgresql":
        return column.in_(values)
    if _TOKEN_SAFE.fullmatch("".join(values)):
        # Printable ASCII: one joined string is far cheaper to send than a 10,000-element array.
        return column == any_(func.string_to_array(bindparam(None, "\x1f".join(values), type_=String), "\x1f"))
    return column == any_(bindparam(None, list(values), type_=ARRAY(String)))


_DEVICE_COLUMNS = select(Device.id, Device.app, Device.device_token, Device.is_active)
# _one_of for the usual tokens on PostgreSQL, built once for the single-send path.
_DEVICES_BY_TOKENS = _DEVICE_COLUMNS.where(
    Device.device_token == any_(func.string_to_array(bindparam("tokens", type_=String), literal("\x1f")))
)


def _write_sends(connection: Connection, sends: Sequence[Send]) -> _Written:
    first_use: dict[str, str] = {}
    for send in sends:
        if send.idempotency_key is not None and send.fingerprint is not None:
            first_use.setdefault(send.idempotency_key, send.fingerprint)
    claimed = records.claim_idempotency_keys(connection, first_use)
    reused = {
        send.id
        for send in sends
        if send.idempotency_key in claimed and claimed[send.idempotency_key] != send.fingerprint
    }
    ids = [s.id for s in sends if s.idempotency_key is not None and s.id not in reused]
    known: dict[uuid.UUID, NotificationStatus] = {}
    if ids:
        rows = connection.execute(select(Notification.id, Notification.status).where(Notification.id.in_(ids)))
        known = {row.id: NotificationStatus(row.status) for row in rows}
    tokens = sorted({s.device_token for s in sends if s.id not in known and s.id not in reused})
    devices: dict[str, list[Any]] = defaultdict(list)
    if tokens:
        if connection.dialect.name == "postgresql" and _TOKEN_SAFE.fullmatch("".join(tokens)):
            found = connection.execute(_DEVICES_BY_TOKENS, {"tokens": "\x1f".join(tokens)})
        else:
            found = connection.execute(_DEVICE_COLUMNS.where(_one_of(Device.device_token, tokens, connection)))
        for device in found:
            devices[device.device_token].append(device)

    answers: list[Accepted | ApiError | None] = []
    pending: dict[uuid.UUID, tuple[dict[str, Any], Send]] = {}
    for send in sends:
        if send.id in reused:
            answers.append(invalid("header.Idempotency-Key", _KEY_REUSED))
            continue
        if send.id in known:
            answers.append(None)
            continue
        if send.id in pending:  # the same idempotent request twice in this batch: the first one queues
            answers.append(Accepted(send.id, NotificationStatus.QUEUED, replayed=True))
            continue
        target = _resolve(send, devices.get(send.device_token, ()))
        if isinstance(target, ApiError):
            answers.append(target)
            continue
        app, device_id = target
        row = _record(send.id, send.device_token, app, device_id, send.content, idempotency_key=send.idempotency_key)
        pending[send.id] = (row, send)
        answers.append(None)
    # Only an idempotent send can meet a stored id (a random uuid4 never does): skip the RETURNING path otherwise.
    written = records.insert_notifications(
        connection, [row for row, _ in pending.values()], skip_existing=any(s.idempotency_key for s in sends)
    )
    lost = [id for id in pending if id not in written]  # a concurrent request with the same key won
    if lost:
        rows = connection.execute(select(Notification.id, Notification.status).where(Notification.id.in_(lost)))
        known.update({row.id: NotificationStatus(row.status) for row in rows})

    result = _Written(answers=[])
    for send, answer in zip(sends, answers, strict=True):
        if answer is not None:
            result.answers.append(answer)
        elif send.id in written:
            result.answers.append(Accepted(send.id, NotificationStatus.QUEUED))
        else:
            result.answers.append(Accepted(send.id, known.get(send.id, NotificationStatus.QUEUED), replayed=True))
    by_stream: dict[str, _Entries] = {}
    for id in written:
        row, send = pending[id]
        stream = _stream(row["app"], send.environment)
        queued = by_stream.get(stream) or by_stream.setdefault(stream, _Entries(stream, [], []))
        queued.ids.append(id)
        message = QueuedNotification(id, row["device_token"], row["app"], send.content, device_id=row["device_id"])
        queued.entries.append(message.encode())
    result.messages = list(by_stream.values())
    return result


@functools.lru_cache(maxsize=1024)
def _stream(app: str, environment: Environment) -> str:
    return StreamKeys(app, environment).transactional_stream


@dataclass(frozen=True, slots=True)
class BulkResult:
    accepted: list[tuple[str, str]]  # (record id, device token)
    not_found: list[str]
    inactive: list[str]


def _write_bulk(
    connection: Connection,
    *,
    tokens: Sequence[str] | None,
    owner_ids: Sequence[str] | None,
    app: str | None,
    environment: Environment,
    content: dict[str, Any],
    idempotency_scope: str | None,
    idempotency_fingerprint: str | None = None,
) -> tuple[BulkResult, list[_Entries]]:
    if idempotency_scope is not None and idempotency_fingerprint is not None:
        claimed = records.claim_idempotency_keys(connection, {idempotency_scope: idempotency_fingerprint})
        if claimed[idempotency_scope] != idempotency_fingerprint:
            raise invalid("header.Idempotency-Key", _KEY_REUSED)
    query = _DEVICE_COLUMNS
    if tokens is not None:
        wanted = list(dict.fromkeys(tokens))
        query = query.where(_one_of(Device.device_token, wanted, connection))
    else:
        wanted = list(dict.fromkeys(owner_ids or ()))
        query = query.add_columns(DeviceOwner.external_id).join(DeviceOwner, Device.owner_id == DeviceOwner.id)
        query = query.where(_one_of(DeviceOwner.external_id, wanted, connection))
    if app is not None:
        query = query.where(Device.app == app)
    found = connection.execute(query.order_by(Device.id)).all()
    reached = {row.device_token if tokens is not None else row.external_id for row in found}
    not_found = [item for item in wanted if item not in reached]
    inactive = [row.device_token for row in found if not row.is_active]
    active = [device for device in found if device.is_active]
    ids: list[uuid.UUID | str]
    if idempotency_scope is not None:
        ids = [idempotent_id(idempotency_scope, "bulk", f"{d.app}/{d.device_token}") for d in active]
    else:
        ids = list(random_id_strings(len(active)))
    # What every record of the send shares (content, status) is kept apart from what differs.
    shared = _record(uuid.UUID(int=0), "", "", None, content)
    for name in ("id", "device_id", "device_token", "app"):
        del shared[name]
    rows = [
        {"id": id, "device_id": d.id, "device_token": d.device_token, "app": d.app}
        for id, d in zip(ids, active, strict=True)
    ]
    if idempotency_scope is not None:
        written = records.insert_notifications(connection, [{**shared, **row} for row in rows], skip_existing=True)
        queued = [row for row in rows if row["id"] in written]
    else:  # fresh ids: the COPY path, every row written
        records.copy_notifications(connection, rows, shared=shared)
        queued = rows
    by_app: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in queued:
        by_app[row["app"]].append(row)
    messages = [
        _Entries(
            _stream(app_rows[0]["app"], environment),
            [row["id"] for row in app_rows],
            QueuedNotification.encode_many(
                [row["id"] for row in app_rows],
                [row["device_token"] for row in app_rows],
                [row["device_id"] for row in app_rows],
                app=app_rows[0]["app"],
                content=content,
            ),
        )
        for app_rows in by_app.values()
    ]
    accepted = [(str(row["id"]), row["device_token"]) for row in rows]
    return BulkResult(accepted, not_found, inactive), messages


class Enqueuer:
    """Writes records and queues messages; single sends go through a micro-batcher."""

    def __init__(
        self,
        engine: Engine,
        redis: aioredis.Redis,
        *,
        batching: bool = True,
        batch_max: int = 500,
        flushes: int = 1,
        on_queued: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.on_queued = on_queued
        self.redis = redis
        self.batching = batching
        self.batch_max = batch_max
        self._waiting: asyncio.Queue[tuple[Send, asyncio.Future[Accepted]]] = asyncio.Queue()
        self._slots = asyncio.Semaphore(flushes)
        self._runner: asyncio.Task[None] | None = None
        self._xadd_many = redis.register_script(XADD_MANY)
        self._spare: list[Connection] = []
        self._flushing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.batching and self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="noti-gateway-batcher")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        while self._spare:
            self._spare.pop().close()

    async def send(self, send: Send) -> Accepted:
        """Write and queue one notification; raises ApiError when it cannot be sent."""
        if not self.batching or self._runner is None:
            answer = (await self._flush_now([send]))[0]
            if isinstance(answer, BaseException):
                raise answer
            return answer
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._waiting.put_nowait((send, future))
        return await future

    async def _run(self) -> None:
        while True:
            first = await self._waiting.get()
            await self._slots.acquire()
            batch = [first]
            while len(batch) < self.batch_max and not self._waiting.empty():
                batch.append(self._waiting.get_nowait())
            task = asyncio.create_task(self._flush(batch))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _flush(self, batch: list[tuple[Send, asyncio.Future[Accepted]]]) -> None:
        try:
            answers = await self._flush_now([send for send, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._slots.release()
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # the client went away
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    async def _flush_now(self, sends: list[Send]) -> list[Accepted | ApiError]:
        written = await asyncio.to_thread(self._write_in_transaction, sends)
        await self._queue(written.messages)
        return written.answers

    def _write_in_transaction(self, sends: list[Send]) -> _Written:
        if not self.batching:
            with self.engine.begin() as connection:
                return _write_sends(connection, sends)
        # Flushes keep their connections open: no pool checkout (and its liveness ping) per batch.
        connection = self._spare.pop() if self._spare else self.engine.connect()
        try:
            with connection.begin():
                written = _write_sends(connection, sends)
        except BaseException:
            connection.close()  # back to the pool, which discards it when it is broken
            raise
        self._spare.append(connection)
        return written

    async def send_bulk(
        self,
        *,
        tokens: Sequence[str] | None,
        owner_ids: Sequence[str] | None,
        app: str | None,
        environment: Environment,
        content: dict[str, Any],
        idempotency_scope: str | None,
        idempotency_fingerprint: str | None = None,
    ) -> BulkResult:
        """Write every record in one batch and queue them in one pipeline."""

        def write() -> tuple[BulkResult, list[_Entries]]:
            with self.engine.begin() as connection:
                return _write_bulk(
                    connection,
                    tokens=tokens,
                    owner_ids=owner_ids,
                    app=app,
                    environment=environment,
                    content=content,
                    idempotency_scope=idempotency_scope,
                    idempotency_fingerprint=idempotency_fingerprint,
                )

        result, messages = await asyncio.to_thread(write)
        await self._queue(messages)
        return result

    async def _queue(self, messages: list[_Entries]) -> None:
        if not messages:
            return
        try:
            if len(messages) == 1:  # the usual case; a pipeline would first ask whether the script is loaded
                await self._xadd_many(keys=[messages[0].stream], args=[pack_entries(messages[0].entries)])
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for queued in messages:
                        await self._xadd_many(keys=[queued.stream], args=[pack_entries(queued.entries)], client=pipe)
                    await pipe.execute()
        except Exception:
            # The records exist but no sender will see them: close them as failed, so stats and
            # history tell the truth, and let the caller know (503).
            outcomes = [
                RecordUpdate(uuid.UUID(str(id)), NotificationStatus.FAILED, apns_reason="QueueUnavailable")
                for queued in messages
                for id in queued.ids
            ]
            await asyncio.to_thread(self._fail, outcomes)
            raise
        if self.on_queued is not None:
            self.on_queued(sum(len(queued.ids) for queued in messages))

    def _fail(self, outcomes: list[RecordUpdate]) -> None:
        with self.engine.begin() as connection:
            records.apply_outcomes(connection, outcomes)
