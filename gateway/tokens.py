"""``/api/devices/{token}/tokens/``: a device's tokens by kind (push-to-start, Live Activity update, VoIP)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from noti.apns.payload import device_token_problem
from noti.gateway.auth import Principal, Scope
from noti.gateway.context import gateway, require
from noti.gateway.devices import find_device
from noti.gateway.errors import AUTH_RESPONSES, ApiError, invalid
from noti.gateway.live_activities import write_once, write_to_tokens
from noti.gateway.notifications import IdempotencyKey, default_environment
from noti.gateway.payloads import checked_content
from noti.gateway.routing import SlashRouter
from noti.gateway.schemas import App, Content, Environment, Error, Text, Timestamp, Token, normalize_token
from noti.gateway.sends import StreamEntries, fingerprint
from noti.live_activities import active_tokens
from noti.store.models import DeviceToken, TokenKind
from noti.store.tokens import TokenFields, kind_problem, upsert_tokens

router = SlashRouter(tags=["tokens"], responses=AUTH_RESPONSES)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Error, "description": "No such device or token"},
    409: {"model": Error, "description": "The device token is registered for several apps: give ?app="},
}
Name = Annotated[Text, Field(min_length=1, max_length=255)]


class TokenIn(BaseModel):
    """A token the app got from ActivityKit or PushKit, and what it is for."""

    model_config = {"extra": "forbid"}

    kind: TokenKind = Field(description="push_to_start, update (one running activity) or voip")
    token: Token = Field(json_schema_extra={"pattern": "^(?:[0-9a-fA-F]{2}){32,100}$"})
    attributes_type: Name | None = Field(default=None, description="The ActivityAttributes type (not for voip)")
    activity_id: Name | None = Field(default=None, description="The running activity's id (update tokens)")

    @field_validator("token")
    @classmethod
    def _apns_token(cls, value: str) -> str:
        problem = device_token_problem(value)
        if problem is not None:
            raise ValueError(problem.replace("device token", "token"))
        return value.lower()


class TokenOut(BaseModel):
    id: int
    device_token: str = Field(description="The device's own device token")
    app: str
    kind: TokenKind
    token: str
    attributes_type: str | None
    activity_id: str | None
    push_type: str = Field(description="The apns-push-type this token is sent with")
    is_active: bool = Field(description="false once APNs answered 410 for it (until registered again)")
    registered_at: Timestamp
    retired_at: Timestamp | None
    ended_at: Timestamp | None = Field(
        description="update tokens: when an end was sent to the activity (it takes no more updates)"
    )
    created_at: Timestamp
    updated_at: Timestamp


class TokenList(BaseModel):
    results: list[TokenOut]


def token_out(row: DeviceToken, device_token: str, app: str) -> TokenOut:
    """The API's view of a stored token."""
    return TokenOut(
        id=row.id,
        device_token=device_token,
        app=app,
        kind=row.kind,
        token=row.token,
        attributes_type=row.attributes_type,
        activity_id=row.activity_id,
        push_type=TokenKind(row.kind).push_type,
        is_active=row.is_active,
        registered_at=row.registered_at,
        retired_at=row.retired_at,
        ended_at=row.ended_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.post(
    "/api/devices/{token}/tokens/",
    response_model=TokenOut,
    status_code=201,
    responses={200: {"model": TokenOut, "description": "The token of this kind and slot, replaced"}, **_NOT_FOUND},
    summary="Register a push-to-start, Live Activity update or VoIP token of a device (idempotent)",
)
async def register_token(
    token: Token,
    body: TokenIn,
    request: Request,
    response: Response,
    _: Annotated[Any, Depends(require(Scope.SEND))],
    app: Annotated[App | None, Query()] = None,
) -> TokenOut:
    state = gateway(request)
    problem = kind_problem(body.kind, body.attributes_type, body.activity_id)
    if problem is not None:
        raise invalid(f"body.{problem[0]}", problem[1])

    def run() -> tuple[TokenOut, bool]:
        with Session(state.engine) as session, session.begin():
            device, _owner = find_device(session, token, app)
            fields = TokenFields(device.id, body.kind, body.token, body.attributes_type, body.activity_id)
            (stored,) = upsert_tokens(session.connection(), [fields])
            row = session.execute(select(DeviceToken).where(DeviceToken.id == stored.id)).scalar_one()
            return token_out(row, device.device_token, device.app), stored.created

    out, created = await run_in_threadpool(run)
    response.status_code = 201 if created else 200
    return out


@router.get(
    "/api/devices/{token}/tokens/",
    response_model=TokenList,
    responses=_NOT_FOUND,
    summary="List a device's tokens by kind",
)
async def list_tokens(
    token: Token,
    request: Request,
    _: Annotated[Any, Depends(require(Scope.READ))],
    app: Annotated[App | None, Query()] = None,
    kind: TokenKind | None = None,
    active: bool | None = None,
) -> TokenList:
    state = gateway(request)

    def run() -> TokenList:
        with Session(state.engine) as session:
            device, _owner = find_device(session, token, app)
            query = select(DeviceToken).where(DeviceToken.device_id == device.id)
            if kind is not None:
                query = query.where(DeviceToken.kind == kind)
            if active is not None:
                query = query.where(DeviceToken.is_active.is_(active))
            rows = session.execute(query.order_by(DeviceToken.id)).scalars()
            return TokenList(results=[token_out(row, device.device_token, device.app) for row in rows])

    return await run_in_threadpool(run)


class VoipAccepted(BaseModel):
    id: uuid.UUID = Field(description="The delivery record")
    token: str = Field(description="The VoIP token it goes to")


@router.post(
    "/api/devices/{token}/voip/",
    response_model=VoipAccepted,
    status_code=202,
    responses={
        200: {"model": VoipAccepted, "description": "A retry of an Idempotency-Key seen before: nothing sent"},
        **_NOT_FOUND,
        422: {"model": Error, "description": "Invalid input, an oversize payload, or a reused Idempotency-Key"},
    },
    summary="Send a VoIP (PushKit) push to the device's VoIP token",
)
async def send_voip(
    token: Token,
    body: Content,
    request: Request,
    response: Response,
    principal: Annotated[Principal, Depends(require(Scope.SEND))],
    app: Annotated[App | None, Query()] = None,
    environment: Environment | None = None,
    idempotency_key: IdempotencyKey = None,
) -> VoipAccepted:
    state = gateway(request)
    if body.push_type not in ("alert", "voip"):  # alert: the default, when none was given
        raise invalid("body.push_type", "a VoIP token takes push type voip")
    content = checked_content(body.model_copy(update={"push_type": "voip"}))
    where = environment or default_environment(state.settings)
    key = f"{principal.prefix}:{idempotency_key}" if idempotency_key else None
    asked = fingerprint(send="voip", device_token=normalize_token(token), app=app, env=where, content=content)

    routes = await state.enqueuer.routes.current()

    def write(session: Session) -> tuple[list[dict[str, Any]], list[StreamEntries]]:
        device, _owner = find_device(session, token, app)
        found = session.execute(
            active_tokens().where(DeviceToken.device_id == device.id, DeviceToken.kind == TokenKind.VOIP)
        ).all()
        if not found:
            raise ApiError(404, "this device has no active VoIP token; register one with kind voip")
        return write_to_tokens(session.connection(), found, content, where, routes, key)

    rows = await write_once(state, response, key, asked, write)
    return VoipAccepted(id=rows[0]["id"], token=rows[0]["device_token"])


@router.delete(
    "/api/devices/{token}/tokens/{kind_token}/",
    status_code=204,
    response_class=Response,
    responses=_NOT_FOUND,
    summary="Delete one of a device's tokens (a push-to-start, update or VoIP token)",
)
async def delete_token(
    token: Token,
    kind_token: Token,
    request: Request,
    _: Annotated[Any, Depends(require(Scope.SEND))],
    app: Annotated[App | None, Query()] = None,
) -> Response:
    state = gateway(request)

    def run() -> None:
        with Session(state.engine) as session, session.begin():
            device, _owner = find_device(session, token, app)
            deleted = session.execute(
                delete(DeviceToken).where(
                    DeviceToken.device_id == device.id, DeviceToken.token == normalize_token(kind_token)
                )
            )
            if not deleted.rowcount:  # type: ignore[attr-defined]
                raise ApiError(404, "this device has no such token")

    await run_in_threadpool(run)
    return Response(status_code=204)
