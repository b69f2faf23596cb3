"""``/api/live-activities/``: start, update and end Live Activities with ActivityKit push notifications.

A start goes to the push-to-start tokens of an attributes type (one device, an owner, a tag
or every device); an update or end to the update tokens of one activity, or of an owner's
activities of an attributes type. Each token gets a delivery record and goes through the
same stream and sender as any notification, as push type ``liveactivity`` on the topic
``<bundle id>.push-type.liveactivity``.

An end retires the update tokens it goes to when it is queued (their ``ended_at``), not
when APNs takes it: from then on updates and ends by owner and attributes type skip that
activity, an update by its activity id is refused (409), and an end by its id may be sent
again (in case APNs did not take the first). An ``Idempotency-Key`` makes a retry replay
the first request's answer, as for notifications.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from fastapi import Depends, Request, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Connection
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from noti.apns.payload import InvalidNotification, NotificationContent, PayloadTooLarge, build_payload
from noti.bundle_id import bundle_id_problem
from noti.gateway.auth import Principal, Scope
from noti.gateway.context import Gateway, gateway, require
from noti.gateway.errors import AUTH_RESPONSES, ApiError, invalid
from noti.gateway.ids import new_id
from noti.gateway.notifications import IdempotencyKey, default_environment
from noti.gateway.routing import SlashRouter
from noti.gateway.schemas import (
    BULK_MAX,
    App,
    Environment,
    Error,
    ExternalId,
    Tag,
    Text,
    Token,
    json_problem,
    normalize_token,
)
from noti.gateway.sends import StreamEntries, fingerprint, route_of, stream_for
from noti.gateway.writes import replayed_records
from noti.live_activities import Targets, record_rows, still_running, targets_problem, token_query
from noti.queue import QueuedNotification, epoch_ms
from noti.routes import Route
from noti.store import records
from noti.store.models import DeviceToken, utcnow
from noti.store.tokens import end_activities

router = SlashRouter(tags=["live activities"], responses=AUTH_RESPONSES)
Name = Annotated[Text, Field(min_length=1, max_length=255)]


class Alert(BaseModel):
    model_config = {"extra": "forbid"}

    title: Text | None = Field(default=None, max_length=4096)
    subtitle: Text | None = Field(default=None, max_length=4096)
    body: Text | None = Field(default=None, max_length=4096)
    sound: Text | None = Field(default=None, max_length=255)


class LiveActivityIn(BaseModel):
    """One ActivityKit push: the event, whose tokens it goes to, and what it says."""

    model_config = {"extra": "forbid"}

    event: Literal["start", "update", "end"]
    # Whose tokens: for a start exactly one of device_token, owner, tag, all_devices; for an
    # update or end an activity_id, or an owner with an attributes_type.
    device_token: Token | None = Field(default=None, description="start: the device with this device token")
    owner: ExternalId | None = Field(default=None, description="The owner's devices (external id)")
    tag: Tag | None = Field(default=None, description="start: devices with this tag")
    all_devices: bool = Field(default=False, description="start: every device with a push-to-start token")
    activity_id: Name | None = Field(default=None, description="update/end: the activity's update token(s)")
    app: App | None = Field(default=None, description="Only devices of this app")
    environment: Environment | None = Field(default=None, description="Defaults to NOTI_APNS_ENVIRONMENT")
    # What it says (Apple's aps keys, with underscores)
    attributes_type: Name | None = None
    attributes: dict[str, Any] | None = None
    content_state: dict[str, Any] | None = None
    alert: Alert | None = None
    stale_date: int | None = Field(default=None, ge=0, le=2**53, description="Epoch seconds")
    dismissal_date: int | None = Field(default=None, ge=0, le=2**53, description="end: epoch seconds")
    relevance_score: float | None = Field(default=None, ge=0, le=1)
    timestamp: int | None = Field(default=None, ge=0, le=2**53, description="Epoch seconds; default now")
    input_push_token: bool | None = Field(default=None, description="start: report the new activity's update token")
    input_push_channel: Name | None = Field(default=None, description="start: join this broadcast channel")
    priority: Literal[10, 5] | None = Field(
        default=None,
        description="10 shows at once and counts against the device's Live Activity budget; 5 does not. "
        "Default 10 with an alert, 5 without",
    )
    expiration: int | None = Field(default=None, ge=0, le=2**53, description="apns-expiration, epoch seconds")

    @field_validator("attributes", "content_state")
    @classmethod
    def _sendable(cls, value: Any) -> Any:
        problem = json_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def targets(self) -> Targets:
        return Targets(
            event=self.event,
            attributes_type=self.attributes_type,
            app=self.app,
            device_tokens=(normalize_token(self.device_token),) if self.device_token else (),
            owners=(self.owner,) if self.owner else (),
            tags=(self.tag,) if self.tag else (),
            all_devices=self.all_devices,
            activity_id=self.activity_id,
        )

    def content(self) -> dict[str, Any]:
        alert = self.alert.model_dump(exclude_none=True) if self.alert else {}
        values = {
            "push_type": "liveactivity",
            "event": self.event,
            "timestamp": self.timestamp if self.timestamp is not None else int(time.time()),
            **alert,
            **self.model_dump(
                include={
                    "attributes_type", "attributes", "content_state", "stale_date", "dismissal_date",
                    "relevance_score", "input_push_token", "input_push_channel", "priority", "expiration",
                },
                exclude_none=True,
            ),
        }  # fmt: skip
        if self.event != "start":  # the attributes type chose the activities; it is no update key
            values.pop("attributes_type", None)
        return values


class LiveActivityItem(BaseModel):
    id: uuid.UUID = Field(description="The delivery record")
    token: str = Field(description="The push-to-start or update token it goes to")
    activity_id: str | None


class LiveActivityAccepted(BaseModel):
    count: int = Field(description="Notifications queued, one per token")
    notifications: list[LiveActivityItem]


def checked(body: LiveActivityIn) -> dict[str, Any]:
    """The queue message's content of a Live Activity request; a 422 naming the field otherwise."""
    problem = targets_problem(body.targets())
    if problem is not None:
        raise invalid(f"body.{problem[0]}", problem[1])
    values = body.content()
    try:
        build_payload(NotificationContent.from_dict(values))
    except PayloadTooLarge as exc:
        raise invalid("body", exc.reason) from None
    except InvalidNotification as exc:
        field = {"title": "alert"}.get(exc.field, exc.field)
        raise invalid(f"body.{field}", exc.reason) from None
    return values


def write_live_activity(
    connection: Connection,
    targets: Targets,
    content: dict[str, Any],
    environment: Literal["sandbox", "production"],
    routes: Mapping[str, Route],
    idempotency_key: str | None = None,
) -> tuple[list[dict[str, Any]], list[StreamEntries]]:
    """Write a record per token ``targets`` reach, and mark the activities an end goes to ended; the records
    and their stream entries. Call in a transaction."""
    query = token_query(targets, connection.dialect.name).order_by(DeviceToken.id).limit(BULK_MAX + 1)
    found, ended = still_running(targets, connection.execute(query).all())
    if ended is not None:
        raise ApiError(409, ended)
    if len(found) > BULK_MAX:
        raise invalid("body", f"more than {BULK_MAX} tokens match: use a NotificationCampaign for an audience this big")
    if not found:
        what = "push-to-start token of this attributes type" if targets.event == "start" else "update token"
        raise ApiError(404, f"no active {what} matches; register tokens with POST /api/devices/<token>/tokens/")
    written = write_to_tokens(connection, found, content, environment, routes, idempotency_key)
    if targets.event == "end":
        end_activities(connection, [row.id for row in found])
    return written


def write_to_tokens(
    connection: Connection,
    found: Sequence[Any],
    content: dict[str, Any],
    environment: Literal["sandbox", "production"],
    routes: Mapping[str, Route],
    idempotency_key: str | None = None,
) -> tuple[list[dict[str, Any]], list[StreamEntries]]:
    """Write a record of ``content`` per token ``found`` (rows of ``token_query``'s shape), each for the
    credential serving its app; the records and their stream entries, per credential's stream. Raises the
    422 naming app and environment, with nothing written, when no credential serves one of the apps.
    Call in a transaction."""
    credentials: dict[str, str] = {}
    for app in dict.fromkeys(row.app for row in found):
        if bundle_id_problem(app) is not None:  # a device registered before bundle ids were checked
            raise invalid("body.app", f"the device's app {app!r} is not a bundle id; register it again")
        route = route_of(routes, app, environment)
        if isinstance(route, ApiError):
            raise route
        credentials[app] = route.credential
    rows = record_rows(found, content, [new_id() for _ in found], utcnow(), credentials=credentials)
    for row in rows:  # a retry with the key finds the records (replayed_records)
        row["idempotency_key"] = idempotency_key
    records.insert_notifications(connection, rows)
    by_stream: dict[str, StreamEntries] = defaultdict(lambda: StreamEntries("", [], []))
    for row in rows:
        stream = stream_for(row["credential"])
        queued = by_stream[stream]
        queued.stream = stream
        queued.ids.append(row["id"])
        message = QueuedNotification(row["id"], row["device_token"], row["app"], content, device_id=row["device_id"],
                                     created_at=epoch_ms(row["created_at"]))  # fmt: skip
        queued.entries.append(message.encode())
    return rows, list(by_stream.values())


async def write_once(
    state: Gateway, response: Response, key: str | None, asked: str,
    write: Callable[[Session], tuple[list[dict[str, Any]], list[StreamEntries]]],
) -> list[dict[str, Any]]:  # fmt: skip
    """Records written by ``write`` in one transaction, their messages queued; or, for a retry of an
    Idempotency-Key, the first request's records, nothing sent, and a 200 with ``Idempotent-Replayed``."""

    def run() -> tuple[list[dict[str, Any]], list[StreamEntries], bool]:
        with Session(state.engine) as session, session.begin():
            if key is not None and (before := replayed_records(session.connection(), key, asked)):
                return before, [], True
            return (*write(session), False)

    rows, entries, replayed = await run_in_threadpool(run)
    await state.enqueuer.queue(entries)
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return rows


@router.post(
    "/api/live-activities/",
    response_model=LiveActivityAccepted,
    status_code=202,
    responses={
        200: {"model": LiveActivityAccepted, "description": "A retry of an Idempotency-Key seen before: nothing sent"},
        404: {"model": Error, "description": "No active token matches"},
        409: {"model": Error, "description": "An update to an activity that has ended (an end was sent to it)"},
        422: {"model": Error, "description": "Invalid input, a push ActivityKit would not take, or a reused key"},
    },
    summary="Start, update or end Live Activities (event start, update or end)",
)
async def send_live_activity(
    body: LiveActivityIn,
    request: Request,
    response: Response,
    principal: Annotated[Principal, Depends(require(Scope.SEND))],
    idempotency_key: IdempotencyKey = None,
) -> LiveActivityAccepted:
    state = gateway(request)
    content = checked(body)
    environment = body.environment or default_environment(state.settings)
    key = f"{principal.prefix}:{idempotency_key}" if idempotency_key else None
    # The body, not the content: the content's default timestamp differs between a request and its retry.
    asked = fingerprint(send="live_activity", body=body.model_dump(mode="json"), env=environment)

    routes = await state.enqueuer.routes.current()

    def write(session: Session) -> tuple[list[dict[str, Any]], list[StreamEntries]]:
        return write_live_activity(session.connection(), body.targets(), content, environment, routes, key)

    rows = await write_once(state, response, key, asked, write)
    return LiveActivityAccepted(
        count=len(rows),
        notifications=[
            LiveActivityItem(id=row["id"], token=row["device_token"], activity_id=row["activity_id"]) for row in rows
        ],
    )
