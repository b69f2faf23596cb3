"""``/api/devices/``: register or update devices by token, list, read, change and delete them."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import Engine, Select, delete, exists, func, select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from noti.gateway.auth import Scope
from noti.gateway.context import gateway, require
from noti.gateway.errors import (
    AUTH_RESPONSES,
    ApiError,
    ErrorItem,
    error_items,
    invalid,
    is_json,
    not_json_message,
    summary,
)
from noti.gateway.pagination import decode_cursor, encode_cursor, next_url
from noti.gateway.routing import SlashRouter
from noti.gateway.schemas import (
    App,
    DeviceBulkIn,
    DeviceBulkOut,
    DeviceIn,
    DeviceOut,
    DevicePage,
    DevicePatch,
    Error,
    ExternalId,
    Rejected,
    Tag,
    Token,
    normalize_token,
)
from noti.store.db import upsert_insert
from noti.store.devices import DeviceFields, Registered, upsert_devices
from noti.store.models import Device, DeviceOwner, Platform, utcnow

router = SlashRouter(tags=["devices"], responses=AUTH_RESPONSES)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Error, "description": "No device with this token"}}
_NO_APP = "give the app (bundle id), or set NOTI_GATEWAY_DEFAULT_APP on the gateway"
# The bulk body is validated off the event loop (10,000 devices take tens of milliseconds),
# so the route reads it raw and declares its schema here; app.openapi() adds the component.
BODY_MODELS = (DeviceBulkIn,)
_BULK_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DeviceBulkIn"}}},
    }
}
_AMBIGUOUS: dict[int | str, dict[str, Any]] = {
    409: {"model": Error, "description": "The token is registered for several apps: give ?app="}
}


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _insert(session: Session, table: Any) -> Any:
    return upsert_insert(_dialect(session), table)


def _owner_id(session: Session, external_id: str) -> int:
    """The owner with this external id, created when new (safe against a concurrent create)."""
    statement = _insert(session, DeviceOwner).values(external_id=external_id, created_at=utcnow(), updated_at=utcnow())
    session.execute(statement.on_conflict_do_nothing(index_elements=["external_id"]))
    return int(session.execute(select(DeviceOwner.id).where(DeviceOwner.external_id == external_id)).scalar_one())


def _device_id(value: Any) -> int:
    if type(value) is not int or not 0 <= value < 2**63:  # a JSON true is a Python int too
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


def find_device(session: Session, token: str, app: str | None) -> tuple[Device, str | None]:
    """The device with this token (of ``app``) and its owner's external id; 404, or 409 when ambiguous."""
    return _find(session, token, app)


def _fields(body: DeviceIn, app: str) -> DeviceFields:
    return DeviceFields(app, body.device_token, body.platform, body.owner, body.tags, body.is_active)


def _register(session: Session, body: DeviceIn, app: str) -> tuple[DeviceOut, bool]:
    (registered,) = upsert_devices(session.connection(), [_fields(body, app)])
    device, owner = session.execute(_query().where(Device.id == registered.id)).one()
    return _out(device, owner), registered.created


def _bulk_body(raw: bytes) -> DeviceBulkIn:
    try:
        return DeviceBulkIn.model_validate_json(raw)
    except ValidationError as exc:  # answered as any other invalid body
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def _register_bulk(engine: Engine, raw: bytes, default_app: str | None) -> dict[str, Any]:
    """The DeviceBulkOut answer to a bulk registration (as a dict: 10,000 items are not built as models)."""
    accepted: list[tuple[int, DeviceFields]] = []
    errors: list[dict[str, Any]] = []

    def refuse(index: int, found: list[ErrorItem]) -> None:
        errors.append({"index": index, "detail": summary(found), "errors": [e.model_dump() for e in found]})

    for index, item in enumerate(_bulk_body(raw).validated()):
        if isinstance(item, Rejected):
            refuse(index, error_items(item.errors, ("body", "devices", index)))
        elif (app := item.app or default_app) is None:
            refuse(index, [ErrorItem(field=f"body.devices.{index}.app", message=_NO_APP)])
        else:
            accepted.append((index, _fields(item, app)))
    stored: list[Registered] = []
    if accepted:
        with engine.begin() as connection:
            stored = upsert_devices(connection, [fields for _, fields in accepted])
    results = [
        {"index": index, "id": r.id, "device_token": f.device_token, "app": f.app, "created": r.created}
        for (index, f), r in zip(accepted, stored, strict=True)
    ]
    created = sum(1 for r in stored if r.created)
    return {
        "created": created,
        "updated": len(stored) - created,
        "failed": len(errors),
        "results": results,
        "errors": errors,
    }


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
        raise invalid("body.app", _NO_APP)

    def run() -> tuple[DeviceOut, bool]:
        with Session(state.engine) as session, session.begin():
            return _register(session, body, app)

    device, created = await run_in_threadpool(run)
    response.status_code = 201 if created else 200
    return device


@router.post(
    "/api/devices/bulk/",
    response_model=DeviceBulkOut,
    openapi_extra=_BULK_BODY,
    responses={422: {"model": Error, "description": "Not a list of 1 to 10,000 devices (invalid devices are 200)"}},
    summary="Register or update up to 10,000 devices; an invalid one is reported by its index, the others stored",
)
async def register_devices(request: Request, _: Annotated[Any, Depends(require(Scope.SEND))]) -> Response:
    state = gateway(request)
    content_type = request.headers.get("content-type")
    if not is_json(content_type):
        raise invalid("body", not_json_message(content_type))
    raw = await request.body()
    answer = await run_in_threadpool(_register_bulk, state.engine, raw, state.settings.gateway_default_app)
    return Response(orjson.dumps(answer), media_type="application/json")


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
