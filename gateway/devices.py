"""``/api/devices/``: register or update devices by token, list, read, change and delete them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from sqlalchemy import Select, delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from noti.gateway.auth import Scope
from noti.gateway.context import gateway, require
from noti.gateway.errors import AUTH_RESPONSES, ApiError, invalid
from noti.gateway.pagination import decode_cursor, encode_cursor, next_url
from noti.gateway.routing import SlashRouter
from noti.gateway.schemas import (
    App,
    DeviceIn,
    DeviceOut,
    DevicePage,
    DevicePatch,
    Error,
    ExternalId,
    Tag,
    Token,
    normalize_token,
)
from noti.store.models import Device, DeviceOwner, Platform, utcnow

router = SlashRouter(tags=["devices"], responses=AUTH_RESPONSES)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Error, "description": "No device with this token"}}
_AMBIGUOUS: dict[int | str, dict[str, Any]] = {
    409: {"model": Error, "description": "The token is registered for several apps: give ?app="}
}


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _insert(session: Session) -> Any:
    return pg_insert if _dialect(session) == "postgresql" else sqlite_insert


def _owner_id(session: Session, external_id: str) -> int:
    """The owner with this external id, created when new (safe against a concurrent create)."""
    statement = _insert(session)(DeviceOwner).values(external_id=external_id, created_at=utcnow(), updated_at=utcnow())
    session.execute(statement.on_conflict_do_nothing(index_elements=["external_id"]))
    return int(session.execute(select(DeviceOwner.id).where(DeviceOwner.external_id == external_id)).scalar_one())


def _device_id(value: Any) -> int:
    if not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError(value)
    return value


def _query() -> Select[Device, str]:
    return select(Device, DeviceOwner.external_id).outerjoin(DeviceOwner, Device.owner_id == DeviceOwner.id)


def _out(device: Device, owner: str | None) -> DeviceOut:
    return DeviceOut(
        id=device.id,
        device_token=device.device_token,
        app=device.app,
        platform=device.platform,
        owner=owner,
        tags=list(device.tags or []),
        is_active=device.is_active,
        last_notification_at=device.last_notification_at,
        created_at=device.created_at,
        updated_at=device.updated_at,
    )


def has_tag(session: Session, tag: str) -> Any:
    """A WHERE clause: the device carries ``tag`` (JSONB containment on PostgreSQL, json_each on SQLite)."""
    if _dialect(session) == "postgresql":
        return Device.tags.op("@>")(func.jsonb_build_array(tag))
    tags = func.json_each(Device.tags).table_valued("value")
    return exists(select(1).select_from(tags).where(tags.c.value == tag))


def _find(session: Session, token: str, app: str | None) -> tuple[Device, str | None]:
    query = _query().where(Device.device_token == normalize_token(token))
    if app is not None:
        query = query.where(Device.app == app)
    rows = session.execute(query.limit(2)).all()
    if not rows:
        raise ApiError(404, "no device with this token" + (f" for app {app}" if app else ""))
    if len(rows) > 1:
        raise ApiError(409, "this token is registered for several apps: give ?app= to choose one")
    return rows[0][0], rows[0][1]


def _register(session: Session, body: DeviceIn, app: str) -> tuple[DeviceOut, bool]:
    owner_id = _owner_id(session, body.owner) if body.owner is not None else None
    existed = session.execute(
        select(Device.id).where(Device.app == app, Device.device_token == body.device_token)
    ).first()
    now = utcnow()
    values = {
        "platform": body.platform,
        "tags": body.tags,
        "is_active": body.is_active,
        "owner_id": owner_id,
        "updated_at": now,
        "registered_at": now,  # a re-registration outdates an earlier 410 (noti.store.records)
    }
    statement = _insert(session)(Device).values(app=app, device_token=body.device_token, created_at=now, **values)
    statement = statement.on_conflict_do_update(index_elements=["app", "device_token"], set_=values)
    session.execute(statement)
    device, owner = session.execute(_query().where(Device.app == app, Device.device_token == body.device_token)).one()
    return _out(device, owner), existed is None


@router.post(
    "/api/devices/",
    response_model=DeviceOut,
    status_code=201,
    responses={200: {"model": DeviceOut, "description": "An existing device, updated"}},
    summary="Register a device, or update the one with this token",
)
async def register_device(
    body: DeviceIn, request: Request, response: Response, _: Annotated[Any, Depends(require(Scope.SEND))]
) -> DeviceOut:
    state = gateway(request)
    app = body.app or state.settings.gateway_default_app
    if app is None:
        raise invalid("body.app", "give the app (bundle id), or set NOTI_GATEWAY_DEFAULT_APP on the gateway")

    def run() -> tuple[DeviceOut, bool]:
        with Session(state.engine) as session, session.begin():
            return _register(session, body, app)

    device, created = await run_in_threadpool(run)
    response.status_code = 201 if created else 200
    return device


@router.get("/api/devices/", response_model=DevicePage, summary="List devices, oldest first")
async def list_devices(
    request: Request,
    _: Annotated[Any, Depends(require(Scope.READ))],
    owner: Annotated[ExternalId | None, Query(description="Owner external id")] = None,
    platform: Platform | None = None,
    active: bool | None = None,
    tag: Annotated[Tag | None, Query()] = None,
    app: Annotated[App | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DevicePage:
    state = gateway(request)
    after = decode_cursor(cursor, _device_id) if cursor else None

    def run() -> list[tuple[Device, str | None]]:
        with Session(state.engine) as session:
            query = _query()
            if owner is not None:
                query = query.where(DeviceOwner.external_id == owner)
            if platform is not None:
                query = query.where(Device.platform == platform)
            if active is not None:
                query = query.where(Device.is_active.is_(active))
            if tag is not None:
                query = query.where(has_tag(session, tag))
            if app is not None:
                query = query.where(Device.app == app)
            if after is not None:
                query = query.where(Device.id > after)
            return [(row[0], row[1]) for row in session.execute(query.order_by(Device.id).limit(limit + 1))]

    rows = await run_in_threadpool(run)
    results = [_out(device, owner_id) for device, owner_id in rows[:limit]]
    next_cursor = encode_cursor(results[-1].id) if len(rows) > limit else None
    return DevicePage(results=results, next_cursor=next_cursor, next=next_url(request, next_cursor))


@router.get(
    "/api/devices/{token}/", response_model=DeviceOut, responses={**_NOT_FOUND, **_AMBIGUOUS}, summary="Read a device"
)
async def get_device(
    token: Token,
    request: Request,
    _: Annotated[Any, Depends(require(Scope.READ))],
    app: Annotated[App | None, Query()] = None,
) -> DeviceOut:
    state = gateway(request)

    def run() -> DeviceOut:
        with Session(state.engine) as session:
            return _out(*_find(session, token, app))

    return await run_in_threadpool(run)


@router.patch(
    "/api/devices/{token}/",
    response_model=DeviceOut,
    responses={**_NOT_FOUND, **_AMBIGUOUS},
    summary="Change a device's owner, tags, platform or active flag",
)
async def update_device(
    token: Token,
    body: DevicePatch,
    request: Request,
    _: Annotated[Any, Depends(require(Scope.SEND))],
    app: Annotated[App | None, Query()] = None,
) -> DeviceOut:
    state = gateway(request)
    changes = body.model_dump(exclude_unset=True)

    def run() -> DeviceOut:
        with Session(state.engine) as session, session.begin():
            device, _owner = _find(session, token, app)
            values: dict[str, Any] = {k: v for k, v in changes.items() if k != "owner"}
            if "owner" in changes:
                values["owner_id"] = _owner_id(session, changes["owner"]) if changes["owner"] is not None else None
            if values:
                session.execute(update(Device).where(Device.id == device.id).values(updated_at=utcnow(), **values))
            return _out(*session.execute(_query().where(Device.id == device.id)).one())

    return await run_in_threadpool(run)


@router.delete(
    "/api/devices/{token}/",
    status_code=204,
    response_class=Response,
    responses={**_NOT_FOUND, **_AMBIGUOUS},
    summary="Delete a device (its delivery records stay)",
)
async def delete_device(
    token: Token,
    request: Request,
    _: Annotated[Any, Depends(require(Scope.SEND))],
    app: Annotated[App | None, Query()] = None,
) -> Response:
    state = gateway(request)

    def run() -> None:
        with Session(state.engine) as session, session.begin():
            device, _owner = _find(session, token, app)
            session.execute(delete(Device).where(Device.id == device.id))

    await run_in_threadpool(run)
    return Response(status_code=204)
