"""``/api/channels/`` and ``/api/broadcasts/``: broadcast channels per app and environment, and broadcasts to them.

The gateway holds no APNs key: each request goes through Redis to a sender of the app's
credential (:mod:`noti.sender.channels`), which calls Apple's channel management API or the
broadcast endpoint and answers. Channels the gateway saw created are kept in the store (with
a name and labels); a broadcast is one delivery record, written by the sender with APNs' answer.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from noti.apns.channels import CHANNEL_REASONS, MAX_BROADCAST_PAYLOAD, ChannelAnswer
from noti.channel_requests import ChannelRequest, ask
from noti.gateway.auth import Principal, Scope
from noti.gateway.context import gateway, require
from noti.gateway.errors import AUTH_RESPONSES, ApiError, invalid
from noti.gateway.routing import SlashRouter
from noti.gateway.schemas import App, Environment, Error, Text
from noti.gateway.sends import route_of
from noti.queue import StreamKeys
from noti.store import channels as store
from noti.store.models import BroadcastChannel

router = SlashRouter(tags=["channels"], responses=AUTH_RESPONSES)
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    404: {"model": Error, "description": "No such channel, or no sender serves this app and environment"},
    422: {"model": Error, "description": "Invalid input, or APNs refused the request as it is"},
    502: {"model": Error, "description": "APNs refused the credential or could not be reached"},
    503: {"model": Error, "description": "No sender of the app's credential answered"},
}


class ChannelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app: App | None = Field(default=None, description="Bundle id; default: the gateway's default app")
    environment: Environment | None = Field(default=None, description="APNs environment; default: the gateway's")
    message_storage_policy: Literal[0, 1] = Field(
        default=0, description="0: no storage (only devices online get a broadcast); 1: the most recent is kept"
    )
    name: Annotated[str, Field(max_length=255, pattern=r"^[^\x00]*$")] | None = None
    labels: dict[Annotated[str, Field(max_length=63)], Annotated[str, Field(max_length=255)]] = Field(
        default_factory=dict, max_length=32
    )


class ChannelOut(BaseModel):
    channel_id: str = Field(description="Apple's channel id (apns-channel-id): give it to the apps that subscribe")
    app: str
    environment: str
    message_storage_policy: int
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    source: str = Field(description="api, or namespace/name of the LiveActivityChannel that manages it")
    created_at: datetime | None = None


class ChannelPage(BaseModel):
    results: list[ChannelOut]


class Alert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Text | None = None
    body: Text | None = None
    sound: Text | None = None


class BroadcastIn(BaseModel):
    """A Live Activity update (or end) for every device subscribed to a channel."""

    model_config = ConfigDict(extra="forbid")

    channel_id: Annotated[str, Field(min_length=1, max_length=200)]
    app: App | None = None
    environment: Environment | None = None
    event: Literal["update", "end"] = "update"
    content_state: dict[str, Any] = Field(description="The activity's ContentState, as the app decodes it")
    timestamp: int | None = Field(default=None, description="Epoch seconds of this state; default: now")
    stale_date: int | None = None
    dismissal_date: int | None = None
    relevance_score: float | None = None
    alert: Alert | None = None
    priority: Literal[10, 5, 1] = Field(default=10, description="10 now (budgeted), 5 or 1 when convenient")
    expiration: int = Field(
        default=0, ge=0, description="apns-expiration, epoch seconds; a channel without storage takes only 0"
    )


class BroadcastOut(BaseModel):
    id: uuid.UUID = Field(description="The broadcast's delivery record (GET /api/notifications/{id}/)")
    channel_id: str
    status: str = Field(description="sent, or failed with APNs' reason")
    status_code: int | None = None
    apns_reason: str | None = None
    apns_request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelTarget:
    """The app and environment a channel request is for, and the queues of the credential serving them."""

    app: str
    environment: Environment
    queue: StreamKeys


async def _keys(request: Request, app: str | None, environment: str | None) -> ChannelTarget:
    """Where a channel request goes: the credential whose route serves the app (the 422 when none does)."""
    state = gateway(request)
    settings = state.settings
    app = app or settings.gateway_default_app
    if not app:
        raise invalid("app", "name the app (bundle id): this gateway has no default app")
    env: Environment = environment or settings.environment  # type: ignore[assignment]
    route = route_of(await state.enqueuer.routes.current(), app, env)
    if isinstance(route, ApiError):
        raise route
    return ChannelTarget(app, env, StreamKeys(route.credential))


def _request(request: Request, op: str, **fields: Any) -> ChannelRequest:
    return ChannelRequest.new(op, gateway(request).settings.gateway_channel_seconds, **fields)


def _out(channel: BroadcastChannel) -> ChannelOut:
    return ChannelOut(
        channel_id=channel.channel_id, app=channel.app, environment=channel.environment,
        message_storage_policy=channel.storage_policy, name=channel.name, labels=channel.labels or {},
        source=channel.source, created_at=channel.created_at,
    )  # fmt: skip


async def _served(request: Request, keys: ChannelTarget) -> None:
    """Refuse at once what no sender could carry out: an app no credential's sender ever served (404)."""
    status = await gateway(request).redis.hgetall(keys.queue.status)
    if not status:
        raise ApiError(
            404, f"no sender serves {keys.app} ({keys.environment}): channels are made with its APNsCredential's key"
        )


async def _ask(request: Request, keys: ChannelTarget, channel_request: ChannelRequest) -> ChannelAnswer:
    """APNs' answer through a sender, or the error a client can act on."""
    await _served(request, keys)
    answer = await ask(gateway(request).redis, keys.queue, channel_request)
    if answer is None:
        raise ApiError(
            503,
            f"no sender of {keys.app} ({keys.environment}) answered: is the APNsCredential of this app and "
            "environment running?",
        )
    if answer.ok:
        return answer
    if answer.missing:
        raise ApiError(404, f"no channel {channel_request.channel_id} for {keys.app} ({keys.environment}) at APNs")
    if answer.status in (0, 403, 429, 500, 503):
        raise ApiError(502, answer.describe())
    raise ApiError(422, answer.describe())


@router.post(
    "/api/channels/", response_model=ChannelOut, status_code=201, responses=_UNAVAILABLE, summary="Create a channel"
)
async def create_channel(
    body: ChannelIn, request: Request, _: Annotated[Principal, Depends(require(Scope.SEND))]
) -> ChannelOut:
    keys = await _keys(request, body.app, body.environment)
    answer = await _ask(request, keys, _request(request, "create", storage_policy=body.message_storage_policy))
    if not answer.channel_id:
        raise ApiError(502, "APNs created a channel but gave no apns-channel-id")
    channel = await run_in_threadpool(
        store.add_channel, gateway(request).engine, app=keys.app, environment=keys.environment,
        channel_id=answer.channel_id, storage_policy=body.message_storage_policy, name=body.name, labels=body.labels,
    )  # fmt: skip
    return _out(channel)


@router.get("/api/channels/", response_model=ChannelPage, summary="List channels")
async def list_channels(
    request: Request,
    _: Annotated[Principal, Depends(require(Scope.READ))],
    app: Annotated[str | None, Query(description="Only this app's")] = None,
    environment: Annotated[Environment | None, Query(description="Only this environment's")] = None,
) -> ChannelPage:
    found = await run_in_threadpool(store.list_channels, gateway(request).engine, app=app, environment=environment)
    return ChannelPage(results=[_out(channel) for channel in found])


@router.get(
    "/api/channels/{channel_id:path}", response_model=ChannelOut, responses=_UNAVAILABLE, summary="Read a channel"
)
async def read_channel(
    channel_id: str,
    request: Request,
    _: Annotated[Principal, Depends(require(Scope.READ))],
    app: App | None = None,
    environment: Environment | None = None,
) -> ChannelOut:
    """The channel as APNs has it (its storage policy), with the name and labels kept here."""
    channel_id = channel_id.rstrip("/")
    keys = await _keys(request, app, environment)
    answer = await _ask(request, keys, _request(request, "read", channel_id=channel_id))
    stored = await run_in_threadpool(store.get_channel, gateway(request).engine, keys.app, keys.environment, channel_id)
    policy = answer.storage_policy if answer.storage_policy is not None else (stored.storage_policy if stored else 0)
    if stored is None:  # made elsewhere (another Noti, Apple's console): APNs knows it, so we show it
        return ChannelOut(
            channel_id=channel_id, app=keys.app, environment=keys.environment, message_storage_policy=policy,
            source="apns",
        )  # fmt: skip
    return _out(stored).model_copy(update={"message_storage_policy": policy})


@router.delete("/api/channels/{channel_id:path}", status_code=204, responses=_UNAVAILABLE, summary="Delete a channel")
async def delete_channel(
    channel_id: str,
    request: Request,
    _: Annotated[Principal, Depends(require(Scope.SEND))],
    app: App | None = None,
    environment: Environment | None = None,
) -> Response:
    channel_id = channel_id.rstrip("/")
    keys = await _keys(request, app, environment)
    try:
        await _ask(request, keys, _request(request, "delete", channel_id=channel_id))
    except ApiError as error:
        if error.status_code != 404:
            raise
        # Gone at APNs already: forget it here too, and say so only if it was not known here either.
        if not await run_in_threadpool(store.remove_channel, gateway(request).engine, keys.app, keys.environment,
                                       channel_id):  # fmt: skip
            raise
        return Response(status_code=204)
    await run_in_threadpool(store.remove_channel, gateway(request).engine, keys.app, keys.environment, channel_id)
    return Response(status_code=204)


def broadcast_payload(body: BroadcastIn) -> dict[str, Any]:
    """The Live Activity payload of a broadcast (``aps`` with event, timestamp, content-state...)."""
    aps: dict[str, Any] = {
        "event": body.event,
        "timestamp": body.timestamp if body.timestamp is not None else int(time.time()),
        "content-state": body.content_state,
    }
    for name, value in (
        ("stale-date", body.stale_date), ("dismissal-date", body.dismissal_date),
        ("relevance-score", body.relevance_score),
    ):  # fmt: skip
        if value is not None:
            aps[name] = value
    if body.alert is not None:
        alert = body.alert.model_dump(exclude_none=True)
        sound = alert.pop("sound", None)
        if alert:
            aps["alert"] = alert
        if sound:
            aps["sound"] = sound
    return {"aps": aps}


@router.post(
    "/api/broadcasts/",
    response_model=BroadcastOut,
    status_code=201,
    responses=_UNAVAILABLE,
    summary="Broadcast to a channel",
)
async def broadcast(
    body: BroadcastIn, request: Request, _: Annotated[Principal, Depends(require(Scope.SEND))]
) -> BroadcastOut:
    """One Live Activity update or end to every device subscribed to the channel; recorded as one notification."""
    keys = await _keys(request, body.app, body.environment)
    payload = broadcast_payload(body)
    size = len(orjson.dumps(payload))
    if size > MAX_BROADCAST_PAYLOAD:
        raise invalid("content_state", f"the payload is {size} bytes; a broadcast is {MAX_BROADCAST_PAYLOAD} at most")
    channel_request = _request(
        request,
        "broadcast",
        channel_id=body.channel_id,
        payload=payload,
        priority=body.priority,
        expiration=body.expiration,
    )
    await _served(request, keys)
    answer = await ask(gateway(request).redis, keys.queue, channel_request)
    if answer is None:
        raise ApiError(
            503,
            f"no sender of {keys.app} ({keys.environment}) answered in time; if one did send it, its record is "
            f"GET /api/notifications/{channel_request.id}/",
        )
    if not answer.ok:
        # The record says so too (status failed, Apple's reason): GET /api/notifications/{id}/.
        status = 404 if answer.missing else 422 if answer.reason in CHANNEL_REASONS else 502
        raise ApiError(status, f"{answer.describe()} (recorded as notification {channel_request.id})")
    return BroadcastOut(
        id=uuid.UUID(channel_request.id), channel_id=body.channel_id, status="sent", status_code=answer.status,
        apns_reason=None, apns_request_id=answer.request_id,
    )  # fmt: skip
