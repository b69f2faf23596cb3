"""``/api/notifications/``: send one, send in bulk, read the history and the stats."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, Query, Request, Response
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from noti.gateway import stats
from noti.gateway.auth import Principal, Scope
from noti.gateway.context import Gateway, gateway, require
from noti.gateway.errors import AUTH_RESPONSES, ApiError, invalid
from noti.gateway.ids import idempotent_id, new_id
from noti.gateway.pagination import decode_cursor, encode_cursor, next_url
from noti.gateway.payloads import checked_content
from noti.gateway.routing import SlashRouter
from noti.gateway.schemas import (
    App,
    BulkAccepted,
    BulkIn,
    Error,
    Moment,
    NotificationAccepted,
    NotificationIn,
    NotificationOut,
    NotificationPage,
    Stats,
    Text,
    Token,
    normalize_token,
    normalize_tokens,
    utc_moment,
)
from noti.gateway.sends import Accepted, BulkResult, BulkSend, Send, fingerprint
from noti.queue import Environment
from noti.settings import GatewaySettings
from noti.store.models import Notification, NotificationStatus

router = SlashRouter(tags=["notifications"], responses=AUTH_RESPONSES)
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {
        "model": Error,
        "description": "Invalid input, an oversize payload, a device that cannot be sent to, or an app no credential "
        "serves in that environment (nothing is written)",
    }
}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description=(
            "A retried request with the same key (and API key) returns the first one's id and sends nothing; "
            "a different request with a used key gets a 422"
        ),
    ),
]


def default_environment(settings: GatewaySettings) -> Environment:
    """Where sends that name no environment go: ``NOTI_APNS_ENVIRONMENT``."""
    return settings.environment


def _environment(request: Request, asked: Environment | None) -> Environment:
    return asked if asked is not None else default_environment(gateway(request).settings)


async def _send_traced(state: Gateway, send: Send) -> Accepted:
    """A single send in its span, whose context the message carries to the sender (noti.tracing)."""
    with state.tracing.span("noti.gateway.send", attributes={"noti.notification.id": str(send.id)}) as span:
        accepted = await state.enqueuer.send(replace(send, trace=span.carrier()))
        span.set("noti.replayed", accepted.replayed)
        return accepted


async def _send_bulk_traced(state: Gateway, bulk: BulkSend) -> BulkResult:
    with state.tracing.span("noti.gateway.send_bulk") as span:
        result = await state.enqueuer.send_bulk(replace(bulk, trace=span.carrier()))
        span.set("noti.accepted", len(result.accepted))
        return result


@router.post(
    "/api/notifications/",
    response_model=NotificationAccepted,
    status_code=202,
    responses={
        200: {"model": NotificationAccepted, "description": "A retry of an Idempotency-Key seen before: nothing sent"},
        **_INVALID,
    },
    summary="Send one notification",
)
async def send_notification(
    body: NotificationIn,
    request: Request,
    principal: Annotated[Principal, Depends(require(Scope.SEND))],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await accept_one(request, principal, body, idempotency_key)


async def accept_one(
    request: Request, principal: Principal, body: NotificationIn, idempotency_key: str | None
) -> Response:
    """Queue one admitted, validated send and answer it (202, or 200 for an idempotent replay)."""
    content = checked_content(body)
    environment = _environment(request, body.environment)
    send = Send(
        id=idempotent_id(principal.prefix, idempotency_key) if idempotency_key else new_id(),
        device_token=body.device_token,
        app=body.app,
        environment=environment,
        content=content,
    )
    if idempotency_key:
        asked = fingerprint(send="one", device_token=send.device_token, app=send.app, env=environment, content=content)
        send = replace(send, idempotency_key=f"{principal.prefix}:{idempotency_key}", fingerprint=asked)
    state = gateway(request)
    accepted = await (_send_traced(state, send) if state.tracing.enabled else state.enqueuer.send(send))
    # The hot path: written directly (the shape is NotificationAccepted) rather than re-validated.
    answer = orjson.dumps({"id": str(accepted.id), "status": accepted.status.value, "credential": accepted.credential})
    if accepted.replayed:
        return Response(answer, 200, {"Idempotent-Replayed": "true"}, media_type="application/json")
    return Response(answer, 202, media_type="application/json")


@router.post(
    "/api/notifications/bulk/",
    response_model=BulkAccepted,
    status_code=202,
    responses=_INVALID,
    summary="Send one notification to up to 10,000 devices (tokens or owners)",
)
async def send_bulk(
    body: BulkIn,
    request: Request,
    principal: Annotated[Principal, Depends(require(Scope.SEND))],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    content = checked_content(body)
    tokens = normalize_tokens(body.device_tokens) if body.device_tokens else None
    environment = _environment(request, body.environment)
    asked = None
    if idempotency_key:  # the same audience in another order is the same request
        # "owner_ids" as the fingerprints of keys already stored were made (the field's earlier name).
        audience = {"device_tokens": sorted(set(tokens or ())), "owner_ids": sorted(set(body.owners or ()))}
        asked = fingerprint(send="bulk", **audience, app=body.app, env=environment, content=content)
    bulk = BulkSend(
        tokens=tokens,
        owners=body.owners,
        app=body.app,
        environment=environment,
        content=content,
        idempotency_key=f"{principal.prefix}:{idempotency_key}" if idempotency_key else None,
        fingerprint=asked,
    )
    state = gateway(request)
    result = await (_send_bulk_traced(state, bulk) if state.tracing.enabled else state.enqueuer.send_bulk(bulk))
    # 10,000 items: written directly in the BulkAccepted shape rather than built as models.
    answer = {
        "count": len(result.accepted),
        "notifications": [
            {"id": id, "device_token": token, "credential": credential} for id, token, credential in result.accepted
        ],
        "not_found": result.not_found,
        "inactive": result.inactive,
    }
    return Response(orjson.dumps(answer), 202, media_type="application/json")


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    if since is not None and until is not None and since > until:
        raise invalid("query.since", "since must not be after until")
    return since, until


Since = Annotated[Moment | None, Query(description="Created at or after (RFC 3339; UTC when no offset)")]
Until = Annotated[Moment | None, Query(description="Created before")]


@router.get("/api/notifications/stats/", response_model=Stats, responses=_INVALID, summary="Counts and rates")
async def notification_stats(
    request: Request, _: Annotated[Any, Depends(require(Scope.READ))], since: Since = None, until: Until = None
) -> Stats:
    since, until = _window(since, until)
    state = gateway(request)

    def run() -> Stats:
        with state.engine.connect() as connection:
            overall = stats.counts(stats.window_totals(connection, None, None))
            window = None
            if since is not None or until is not None:
                window = stats.counts(stats.window_totals(connection, since, until))
        return Stats(overall=overall, window=window, since=since, until=until)

    return await run_in_threadpool(run)


def _cursor_time(value: Any) -> datetime:
    return utc_moment(datetime.fromisoformat(value))


@router.get(
    "/api/notifications/",
    response_model=NotificationPage,
    responses=_INVALID,
    summary="Notification history, newest first",
)
async def list_notifications(
    request: Request,
    _: Annotated[Any, Depends(require(Scope.READ))],
    status: NotificationStatus | None = None,
    device_token: Annotated[Token | None, Query()] = None,
    campaign: Annotated[Text | None, Query(min_length=1, max_length=320, description="namespace/name")] = None,
    app: Annotated[App | None, Query()] = None,
    since: Since = None,
    until: Until = None,
    cursor: Annotated[str | None, Query(max_length=300)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> NotificationPage:
    since, until = _window(since, until)
    after = decode_cursor(cursor, _cursor_time, uuid.UUID) if cursor else None
    state = gateway(request)

    def run() -> list[Notification]:
        query = select(Notification)
        if status is not None:
            query = query.where(Notification.status == status)
        if device_token is not None:
            query = query.where(Notification.device_token == normalize_token(device_token))
        if campaign is not None:
            query = query.where(Notification.campaign == campaign)
        if app is not None:
            query = query.where(Notification.app == app)
        if since is not None:
            query = query.where(Notification.created_at >= since)
        if until is not None:
            query = query.where(Notification.created_at < until)
        if after is not None:
            query = query.where(tuple_(Notification.created_at, Notification.id) < tuple_(*after))
        query = query.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit + 1)
        with Session(state.engine) as session:
            return list(session.scalars(query))

    rows = await run_in_threadpool(run)
    results = [NotificationOut.model_validate(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = results[-1]
        next_cursor = encode_cursor(_utc(last.created_at).isoformat(), str(last.id))  # type: ignore[union-attr]
    return NotificationPage(results=results, next_cursor=next_cursor, next=next_url(request, next_cursor))


@router.get(
    "/api/notifications/{id}/",
    response_model=NotificationOut,
    responses={404: {"model": Error, "description": "No notification with this id"}},
    summary="Read one notification's delivery record",
)
async def get_notification(
    id: uuid.UUID, request: Request, _: Annotated[Any, Depends(require(Scope.READ))]
) -> NotificationOut:
    state = gateway(request)

    def run() -> Notification | None:
        with Session(state.engine) as session:
            return session.get(Notification, id)

    record = await run_in_threadpool(run)
    if record is None:
        raise ApiError(404, "no notification with this id")
    return NotificationOut.model_validate(record)
