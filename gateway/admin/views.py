"""The admin's pages over the store: notifications (with resend), devices, owners, API keys.

Forms apply the REST API's own rules (``noti.gateway.schemas.DeviceIn``), so the admin can
save nothing the API would refuse, and a resend is a send through the API's path
(``checked_content`` and the ``Enqueuer``), recorded as a new notification. A record sent to a
token by kind (Live Activity, VoIP) is resent to that same token, as the Live Activity and
VoIP routes send; a broadcast is not resent from here (it is answered by APNs while its
caller waits): the page says to broadcast again over the API.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, ClassVar

from markupsafe import Markup
from pydantic import TypeAdapter, ValidationError
from sqladmin import ModelView, expose
from sqladmin.filters import AllUniqueStringValuesFilter, BooleanFilter, StaticValuesFilter
from sqladmin.flash import Flash
from sqlalchemy import Select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from wtforms import Form, StringField

from noti.gateway.context import Gateway
from noti.gateway.errors import ApiError
from noti.gateway.ids import new_id
from noti.gateway.live_activities import write_to_tokens
from noti.gateway.notifications import default_environment
from noti.gateway.payloads import checked_content
from noti.gateway.schemas import DeviceIn, ExternalId, NotificationIn
from noti.gateway.sends import Send
from noti.live_activities import Targets, active_tokens, still_running
from noti.store.content import record_content
from noti.store.models import ApiKey, Device, DeviceOwner, DeviceToken, Notification, NotificationStatus, TokenKind
from noti.store.tokens import end_activities

STATUS_COLORS = {
    NotificationStatus.PENDING: "secondary",
    NotificationStatus.QUEUED: "blue",
    NotificationStatus.SENDING: "yellow",
    NotificationStatus.SENT: "green",
    NotificationStatus.FAILED: "red",
    NotificationStatus.INVALID_TOKEN: "orange",
}
RESENDABLE = frozenset({NotificationStatus.FAILED})
BROADCAST_NOT_RESENT = "a broadcast is not resent from here: broadcast to its channel again with POST /api/broadcasts/"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def status_badge(model: Any, _attribute: Any) -> Markup:
    status = NotificationStatus(model.status)
    return Markup('<span class="badge bg-{} text-white">{}</span>').format(STATUS_COLORS[status], status.value)


def active_badge(model: Any, _attribute: Any) -> Markup:
    color, label = ("green", "active") if model.is_active else ("secondary", "inactive")
    return Markup('<span class="badge bg-{} text-white">{}</span>').format(color, label)


def short_token(token: str) -> str:
    """``0123abcd…cdef``: the first 8 and last 4 characters, enough to tell tokens apart on screen."""
    return token if len(token) <= 14 else f"{token[:8]}…{token[-4:]}"


def token_cell(token: str) -> Markup:
    """A shortened token with the full one on hover and a button that copies it."""
    return Markup(
        '<span class="noti-token" title="{0}">{1}</span>'
        '<button type="button" class="noti-copy" data-copy="{0}" title="Copy the full token" '
        'aria-label="Copy the full token"><i class="fa-regular fa-copy"></i></button>'
    ).format(token, short_token(token))


def utc_time(moment: datetime | None) -> str:
    if moment is None:
        return ""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime(TIME_FORMAT)


def parse_moment(text: str) -> datetime:
    """A date range bound as typed in the filter (``2026-12-01T09:30``, UTC unless it has an offset)."""
    moment = datetime.fromisoformat(text.strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def date_range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None, str | None]:
    """The parsed ``since``/``until`` of the list's date filter, and what is wrong with them if anything."""
    bounds: list[datetime | None] = []
    for name, text in (("From", since), ("To", until)):
        if not text:
            bounds.append(None)
            continue
        try:
            bounds.append(parse_moment(text))
        except (ValueError, OverflowError):
            return None, None, f"{name}: {text!r} is not a date and time such as 2026-12-01T09:30"
    first, last = bounds
    if first is not None and last is not None and first > last:
        return None, None, "From must not be after To"
    return first, last, None


def _tags(model: Any, _attribute: Any) -> str:
    return ", ".join(model.tags or [])


class TagsField(StringField):
    """Tags typed as ``vip, beta``, stored as the list the API stores."""

    def _value(self) -> str:
        return ", ".join(self.data or []) if isinstance(self.data, list) else str(self.data or "")

    def process_formdata(self, valuelist: list[Any]) -> None:
        text = str(valuelist[0]) if valuelist else ""
        self.data = [tag.strip() for tag in text.split(",") if tag.strip()]


def _message(error: Any) -> str:
    text = str(error["msg"])
    return text.removeprefix("Value error, ")


class DeviceForm(Form):
    """The device form, checked by the API's ``DeviceIn``: one rule for both doors."""

    # Rules of DeviceIn that belong to no single field (the token's fit to the platform) land here.
    _MODEL_ERRORS_FIELD = "device_token"

    def validate(self, extra_validators: Any = None) -> bool:
        if not super().validate(extra_validators):
            return False
        fields: dict[str, Any] = self._fields
        asked = {name: fields[name].data for name in ("device_token", "app", "platform", "tags", "is_active")}
        asked["platform"] = getattr(asked["platform"], "value", asked["platform"])
        try:
            checked = DeviceIn.model_validate(asked)
        except ValidationError as exc:
            for error in exc.errors():
                name = str(error["loc"][0]) if error["loc"] else self._MODEL_ERRORS_FIELD
                field = fields.get(name, fields[self._MODEL_ERRORS_FIELD])
                field.errors = [*field.errors, _message(error)]
            return False
        fields["device_token"].data = checked.device_token  # stored as the API stores it (lower case)
        fields["tags"].data = checked.tags
        return True


_EXTERNAL_ID: TypeAdapter[str] = TypeAdapter(ExternalId)


class OwnerForm(Form):
    """The owner form: an external id as the API takes it (``owner`` of a device)."""

    def validate(self, extra_validators: Any = None) -> bool:
        if not super().validate(extra_validators):
            return False
        field = self._fields["external_id"]
        try:
            field.data = _EXTERNAL_ID.validate_python(field.data)
        except ValidationError as exc:
            field.errors = [*field.errors, *(_message(error) for error in exc.errors())]
            return False
        return True


class NotificationAdmin(ModelView, model=Notification):
    name = "Notification"
    name_plural = "Notifications"
    icon = "fa-solid fa-bell"
    can_create = False
    can_edit = False
    can_delete = False  # delivery records are history; the roll-up counts them
    list_template = "noti/notification_list.html"
    details_template = "noti/notification_details.html"
    column_list: ClassVar[Any] = [
        Notification.status, Notification.created_at, Notification.title, Notification.app,
        Notification.device_token, Notification.campaign, Notification.apns_reason,
    ]  # fmt: skip
    column_labels: ClassVar[Any] = {
        Notification.created_at: "created (UTC)", Notification.device_token: "device token",
        Notification.apns_reason: "failure reason",
        # What Apple's Push Notifications Console looks a sandbox delivery up by; on the detail page.
        Notification.apns_unique_id: "apns-unique-id",
    }  # fmt: skip
    column_searchable_list: ClassVar[Any] = [Notification.device_token, Notification.title, Notification.campaign]
    column_filters: ClassVar[Any] = [
        StaticValuesFilter(Notification.status, values=[(s.value, s.value) for s in NotificationStatus]),
        AllUniqueStringValuesFilter(Notification.app),
    ]
    column_default_sort: ClassVar[Any] = [(Notification.created_at, True)]
    column_formatters: ClassVar[Any] = {
        Notification.status: status_badge,
        Notification.device_token: lambda m, _a: token_cell(m.device_token),
        Notification.created_at: lambda m, _a: utc_time(m.created_at),
        Notification.apns_reason: lambda m, _a: Markup('<span class="noti-reason" title="{0}">{0}</span>').format(
            m.apns_reason or ""
        ),
    }
    column_formatters_detail: ClassVar[Any] = {
        Notification.status: status_badge,
        Notification.created_at: lambda m, _a: utc_time(m.created_at),
        Notification.queued_at: lambda m, _a: utc_time(m.queued_at),
        Notification.sent_at: lambda m, _a: utc_time(m.sent_at),
    }
    page_size = 50

    def list_query(self, request: Request) -> Select[Any]:
        query = super().list_query(request)
        since, until, problem = date_range(request.query_params.get("since"), request.query_params.get("until"))
        if problem is None and since is not None:
            query = query.where(Notification.created_at >= since)
        if problem is None and until is not None:
            query = query.where(Notification.created_at < until)
        return query

    async def list_context(self, request: Request) -> dict[str, Any]:
        since, until = request.query_params.get("since", ""), request.query_params.get("until", "")
        return {"since": since, "until": until, "range_error": date_range(since, until)[2]}

    async def details_context(self, request: Request) -> dict[str, Any]:
        return {"resendable": {status.value for status in RESENDABLE}, "broadcast_not_resent": BROADCAST_NOT_RESENT}

    @expose("/resend/{pk}", methods=["POST"])
    async def resend(self, request: Request) -> Response:
        """Send the notification's content again to its device: a new notification, the API's way."""
        record = await self.get_object_for_details(request)
        if record is None:
            Flash.error(request, "No such notification.")
            return RedirectResponse(request.url_for("admin:list", identity=self.identity), status_code=303)
        back = request.url_for("admin:details", identity=self.identity, pk=str(record.id))
        if NotificationStatus(record.status) not in RESENDABLE:
            Flash.error(request, f"Only failed notifications are resent; this one is {record.status}.")
            return RedirectResponse(back, status_code=303)
        try:
            # The admin this view was added to is a NotiAdmin, which holds the gateway's send path.
            accepted = await resend(self._admin_ref.state, record)  # type: ignore[attr-defined]
        except ApiError as exc:
            Flash.error(request, f"Not resent: {exc.errors[0].message if exc.errors else exc.detail}")
            return RedirectResponse(back, status_code=303)
        Flash.success(request, f"Resent as notification {accepted}.")
        return RedirectResponse(
            request.url_for("admin:details", identity=self.identity, pk=str(accepted)), status_code=303
        )


async def resend(state: Gateway, record: Notification) -> Any:
    """Queue the record's stored content again, to its device or to the token by kind it went to; returns
    the new notification's id."""
    if record.channel_id is not None:
        raise ApiError(422, BROADCAST_NOT_RESENT)
    stored = record_content(record)
    if record.token_id is not None:
        return await _resend_to_token(state, record, stored)
    try:
        body = NotificationIn.model_validate({**stored, "device_token": record.device_token, "app": record.app})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ApiError(422, f"{'.'.join(map(str, first['loc']))}: {_message(first)}") from None
    content = checked_content(body)
    environment = default_environment(state.settings)  # the record does not keep the environment it went to
    send = Send(id=new_id(), device_token=body.device_token, app=body.app, environment=environment, content=content)
    return (await state.enqueuer.send(send)).id


async def _resend_to_token(state: Gateway, record: Notification, content: dict[str, Any]) -> Any:
    """Queue ``content`` to the token by kind ``record`` went to, as the Live Activity and VoIP routes do."""
    if content.get("push_type") == "liveactivity":
        content = {**content, "timestamp": int(time.time())}  # ActivityKit drops a push older than the last one
    environment = default_environment(state.settings)  # the record does not keep the environment it went to
    routes = await state.enqueuer.routes.current()
    activity = Targets(event=record.event or "update", activity_id=record.activity_id)  # type: ignore[arg-type]

    def write() -> tuple[list[dict[str, Any]], list[Any]]:
        with state.engine.begin() as connection:
            found = connection.execute(active_tokens().where(DeviceToken.id == record.token_id)).all()
            if not found:
                raise ApiError(422, "the token it went to is deleted or retired (APNs answered 410): not resent")
            found, ended = still_running(activity, found)
            if ended is not None:
                raise ApiError(409, ended)
            written = write_to_tokens(connection, found, content, environment, routes)
            if record.event == "end":
                end_activities(connection, [row.id for row in found])
            return written

    rows, entries = await run_in_threadpool(write)
    await state.enqueuer.queue(entries)
    return rows[0]["id"]


class DeviceAdmin(ModelView, model=Device):
    icon = "fa-solid fa-mobile-screen"
    column_list: ClassVar[Any] = [
        Device.id, Device.app, Device.device_token, Device.platform, Device.owner, Device.tags, Device.is_active,
        Device.last_notification_at,
    ]  # fmt: skip
    column_labels: ClassVar[Any] = {
        Device.device_token: "device token", Device.is_active: "active", Device.last_notification_at: "last sent (UTC)",
    }  # fmt: skip
    column_searchable_list: ClassVar[Any] = [Device.device_token, Device.app]
    column_filters: ClassVar[Any] = [
        BooleanFilter(Device.is_active, title="Active"),
        AllUniqueStringValuesFilter(Device.app),
    ]
    column_formatters: ClassVar[Any] = {
        Device.is_active: active_badge,
        Device.device_token: lambda m, _a: token_cell(m.device_token),
        Device.tags: _tags,
        Device.last_notification_at: lambda m, _a: utc_time(m.last_notification_at),
    }
    column_formatters_detail: ClassVar[Any] = {Device.is_active: active_badge, Device.tags: _tags}
    form_base_class = DeviceForm
    form_overrides: ClassVar[Any] = {"tags": TagsField}
    form_args: ClassVar[Any] = {"tags": {"description": "Comma-separated, e.g. vip, beta"}}
    form_excluded_columns: ClassVar[Any] = [Device.created_at, Device.updated_at]
    page_size = 50


class TokenAdmin(ModelView, model=DeviceToken):
    """A device's tokens by kind (push-to-start, Live Activity update, VoIP): registered over the API, so read-only."""

    name = "Token"
    name_plural = "Tokens by kind"
    icon = "fa-solid fa-bolt"
    can_create = False
    can_edit = False
    column_list: ClassVar[Any] = [
        DeviceToken.id, DeviceToken.kind, DeviceToken.token, DeviceToken.device, DeviceToken.attributes_type,
        DeviceToken.activity_id, DeviceToken.is_active, DeviceToken.registered_at,
    ]  # fmt: skip
    column_labels: ClassVar[Any] = {
        DeviceToken.attributes_type: "attributes type", DeviceToken.activity_id: "activity",
        DeviceToken.is_active: "active", DeviceToken.registered_at: "registered (UTC)",
    }  # fmt: skip
    column_searchable_list: ClassVar[Any] = [DeviceToken.token, DeviceToken.attributes_type, DeviceToken.activity_id]
    column_filters: ClassVar[Any] = [
        StaticValuesFilter(DeviceToken.kind, [(kind.value, kind.value) for kind in TokenKind], title="Kind"),
        BooleanFilter(DeviceToken.is_active, title="Active"),
    ]
    column_formatters: ClassVar[Any] = {
        DeviceToken.kind: lambda m, _a: TokenKind(m.kind).value,
        DeviceToken.is_active: active_badge,
        DeviceToken.token: lambda m, _a: token_cell(m.token),
        DeviceToken.device: lambda m, _a: token_cell(m.device.device_token) if m.device else "",
        DeviceToken.registered_at: lambda m, _a: utc_time(m.registered_at),
    }
    page_size = 50


class OwnerAdmin(ModelView, model=DeviceOwner):
    name = "Owner"
    name_plural = "Owners"
    icon = "fa-solid fa-user"
    column_list: ClassVar[Any] = [
        DeviceOwner.id, DeviceOwner.external_id, DeviceOwner.name, DeviceOwner.email, DeviceOwner.is_active,
        DeviceOwner.created_at,
    ]  # fmt: skip
    column_searchable_list: ClassVar[Any] = [DeviceOwner.external_id, DeviceOwner.email, DeviceOwner.name]
    column_filters: ClassVar[Any] = [BooleanFilter(DeviceOwner.is_active)]
    column_formatters: ClassVar[Any] = {
        DeviceOwner.is_active: active_badge,
        DeviceOwner.created_at: lambda m, _a: utc_time(m.created_at),
    }
    form_base_class = OwnerForm
    form_excluded_columns: ClassVar[Any] = [DeviceOwner.devices, DeviceOwner.created_at, DeviceOwner.updated_at]


class ApiKeyAdmin(ModelView, model=ApiKey):
    name = "API key"
    name_plural = "API keys"
    icon = "fa-solid fa-key"
    can_create = False  # keys are made with `noti apikey create`, which shows the secret once
    can_edit = False
    can_delete = False  # revoke with `noti apikey revoke`: the row stays, as a record of who had access
    column_list: ClassVar[Any] = [
        ApiKey.name, ApiKey.prefix, ApiKey.scopes, ApiKey.created_at, ApiKey.last_used_at, ApiKey.revoked_at,
    ]  # fmt: skip
    column_formatters: ClassVar[Any] = {
        ApiKey.created_at: lambda m, _a: utc_time(m.created_at),
        ApiKey.last_used_at: lambda m, _a: utc_time(m.last_used_at),
        ApiKey.revoked_at: lambda m, _a: utc_time(m.revoked_at),
    }
    column_details_exclude_list: ClassVar[Any] = [ApiKey.key_hash]


VIEWS = (NotificationAdmin, DeviceAdmin, TokenAdmin, OwnerAdmin, ApiKeyAdmin)
