"""``/admin/``: browse devices, owners, notifications and API keys (sqladmin), behind a login.

Log in with any user name and, as the password, an API key that has the ``admin`` scope
(``noti apikey create --name ops --scopes admin``). The session cookie holds only the key's
prefix, checked against the store on every page, so revoking the key ends its sessions.
Sessions are signed with ``NOTI_GATEWAY_SESSION_SECRET`` (random per process when unset).
"""

from __future__ import annotations

import secrets
from typing import Any, ClassVar

from fastapi import FastAPI
from markupsafe import Markup
from sqladmin import Admin, ModelView
from sqladmin.authentication import AuthenticationBackend
from sqladmin.filters import AllUniqueStringValuesFilter, BooleanFilter, StaticValuesFilter
from sqlalchemy import Engine, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from noti.gateway.auth import KeyVerifier, Scope
from noti.store.models import ApiKey, Device, DeviceOwner, Notification, NotificationStatus

BASE_URL = "/admin"
STATUS_COLORS = {
    NotificationStatus.PENDING: "secondary",
    NotificationStatus.QUEUED: "blue",
    NotificationStatus.SENDING: "yellow",
    NotificationStatus.SENT: "green",
    NotificationStatus.FAILED: "red",
    NotificationStatus.INVALID_TOKEN: "orange",
}


def status_badge(model: Any, _attribute: Any) -> Markup:
    status = NotificationStatus(model.status)
    return Markup('<span class="badge bg-{} text-white">{}</span>').format(STATUS_COLORS[status], status.value)


def active_badge(model: Any, _attribute: Any) -> Markup:
    color, label = ("green", "active") if model.is_active else ("secondary", "inactive")
    return Markup('<span class="badge bg-{} text-white">{}</span>').format(color, label)


class NotificationAdmin(ModelView, model=Notification):
    name = "Notification"
    name_plural = "Notifications"
    icon = "fa-solid fa-bell"
    can_create = False
    can_edit = False
    can_delete = False  # delivery records are history; the roll-up counts them
    column_list: ClassVar[Any] = [
        Notification.status, Notification.created_at, Notification.title, Notification.app,
        Notification.device_token, Notification.campaign, Notification.apns_reason, Notification.apns_unique_id,
    ]  # fmt: skip
    column_searchable_list: ClassVar[Any] = [Notification.device_token, Notification.title, Notification.campaign]
    column_filters: ClassVar[Any] = [
        StaticValuesFilter(Notification.status, values=[(s.value, s.value) for s in NotificationStatus]),
        AllUniqueStringValuesFilter(Notification.app),
    ]
    column_default_sort: ClassVar[Any] = [(Notification.created_at, True)]
    column_formatters: ClassVar[Any] = {
        Notification.status: status_badge,
        Notification.device_token: lambda m, _a: f"{m.device_token[:12]}…",
        Notification.created_at: lambda m, _a: f"{m.created_at:%Y-%m-%d %H:%M:%S}",
    }
    column_formatters_detail: ClassVar[Any] = {Notification.status: status_badge}
    page_size = 50


class DeviceAdmin(ModelView, model=Device):
    icon = "fa-solid fa-mobile-screen"
    column_list: ClassVar[Any] = [
        Device.id, Device.app, Device.device_token, Device.platform, Device.owner, Device.tags, Device.is_active,
        Device.last_notification_at,
    ]  # fmt: skip
    column_searchable_list: ClassVar[Any] = [Device.device_token, Device.app]
    column_filters: ClassVar[Any] = [BooleanFilter(Device.is_active), AllUniqueStringValuesFilter(Device.app)]
    column_formatters: ClassVar[Any] = {Device.is_active: active_badge}
    form_excluded_columns: ClassVar[Any] = [Device.created_at, Device.updated_at]
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
    column_formatters: ClassVar[Any] = {DeviceOwner.is_active: active_badge}
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
    column_details_exclude_list: ClassVar[Any] = [ApiKey.key_hash]


class AdminKeyLogin(AuthenticationBackend):
    """The password is an API key with the admin scope; the session remembers its prefix only."""

    def __init__(self, engine: Engine, verifier: KeyVerifier, secret: str) -> None:
        super().__init__(secret_key=secret, same_site="strict", https_only=False, max_age=8 * 3600)
        self.engine = engine
        self.verifier = verifier

    async def login(self, request: Request) -> bool:
        form = await request.form()
        key = str(form.get("password") or "")
        principal = await run_in_threadpool(self.verifier.verify, key) if key else None
        if principal is None or not principal.allows(Scope.ADMIN):
            return False
        request.session.update({"key": principal.prefix, "user": str(form.get("username") or principal.name)})
        return True

    async def logout(self, request: Request) -> bool:
        request.session.clear()
        return True

    async def authenticate(self, request: Request) -> bool:
        prefix = request.session.get("key")
        if not isinstance(prefix, str):
            return False

        def live() -> bool:
            with self.engine.connect() as connection:
                row = connection.execute(
                    select(ApiKey.scopes).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
                ).one_or_none()
            return row is not None and Scope.ADMIN.value in (row.scopes or ())

        return await run_in_threadpool(live)


def install(app: FastAPI, engine: Engine, verifier: KeyVerifier, secret: str | None) -> Admin:
    admin = Admin(
        app,
        engine=engine,
        base_url=BASE_URL,
        title="Noti admin",
        authentication_backend=AdminKeyLogin(engine, verifier, secret or secrets.token_urlsafe(32)),
    )
    for view in (NotificationAdmin, DeviceAdmin, OwnerAdmin, ApiKeyAdmin):
        admin.add_view(view)
    return admin
