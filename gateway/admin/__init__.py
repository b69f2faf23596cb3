"""``/admin/``: a dashboard, and devices, owners, notifications and API keys (sqladmin), behind a login.

Log in with any user name and, as the password, an API key that has the ``admin`` scope
(``noti apikey create --name ops --scopes admin``). Sessions end at logout, when the key is
revoked, or after 8 hours (``sessions``); cookies are signed with ``NOTI_GATEWAY_SESSION_SECRET``
(random per process when unset) and ``Secure`` over https. Changes must come from the admin's
own pages, and no page may be framed (``guard``).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import FastAPI
from sqladmin import Admin
from sqladmin.authentication import login_required
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from noti.gateway.admin import dashboard
from noti.gateway.admin.channels import ChannelAdmin
from noti.gateway.admin.dashboard import percent
from noti.gateway.admin.guard import AdminGuard
from noti.gateway.admin.sessions import AdminKeyLogin, login_message
from noti.gateway.admin.views import VIEWS
from noti.gateway.context import Gateway

BASE_URL = "/admin"
HERE = Path(__file__).parent


def admin_hosts(setting: str) -> list[str]:
    """``NOTI_GATEWAY_ADMIN_HOSTS`` as Starlette's allowed hosts (``*`` when empty)."""
    return [host.strip() for host in setting.split(",") if host.strip()] or ["*"]


class NotiAdmin(Admin):
    """sqladmin with a dashboard for its index and a login that says why a key was refused."""

    def __init__(self, app: FastAPI, state: Gateway, login: AdminKeyLogin) -> None:
        super().__init__(
            app,
            engine=state.engine,
            base_url=BASE_URL,
            title="Noti admin",
            favicon_url=f"{BASE_URL}/statics/noti/favicon.svg",
            templates_dir=str(HERE / "templates"),
            authentication_backend=login,
            middlewares=[
                Middleware(TrustedHostMiddleware, allowed_hosts=admin_hosts(state.settings.gateway_admin_hosts)),
                Middleware(AdminGuard),
            ],
            static_files_kwargs={"directory": str(HERE / "static")},
        )
        self.state = state
        self.keys = login
        self.templates.env.globals["percent"] = percent

    @login_required
    async def index(self, request: Request) -> Response:
        board = await dashboard.load(self.state)
        return await self.templates.TemplateResponse(request, "noti/dashboard.html", {"board": board})

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return await self.templates.TemplateResponse(request, "sqladmin/login.html")
        form = await request.form()
        checked = await self.keys.check_key(str(form.get("password") or ""))
        if isinstance(checked, str):
            context = {"error": login_message(checked), "username": str(form.get("username") or "")}
            return await self.templates.TemplateResponse(request, "sqladmin/login.html", context, status_code=400)
        await self.keys.start(request, checked, str(form.get("username") or ""))
        return RedirectResponse(request.url_for("admin:index"), status_code=302)


def install(app: FastAPI, state: Gateway) -> Admin:
    """Mount the admin UI on ``app`` at ``/admin``."""
    secret = state.settings.gateway_session_secret or secrets.token_urlsafe(32)
    admin = NotiAdmin(app, state, AdminKeyLogin(state.verifier, state.redis, secret, BASE_URL))
    for view in (*VIEWS, ChannelAdmin):
        admin.add_view(view)
    return admin
