"""Admin logins: an API key with the ``admin`` scope as the password, and sessions the server can end.

The signed cookie holds a random session id, the key's id and the user name, never the key.
The session itself lives in Redis (``noti.queue.admin_session``) for ``SESSION_SECONDS``:
logout deletes it, so a copy of the cookie is dead from then on, and every request re-checks
the key through ``KeyVerifier.by_id`` (the key cache), so revoking the key ends its sessions
within ``NOTI_GATEWAY_KEY_CACHE_SECONDS``.
"""

from __future__ import annotations

import secrets
from typing import Literal

import redis.asyncio as aioredis
from sqladmin.authentication import AuthenticationBackend
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from noti.gateway.auth import KeyVerifier, Principal
from noti.gateway.auth import Scope as KeyScope
from noti.queue import admin_session

SESSION_SECONDS = 8 * 3600
COOKIE = "noti_admin_session"
NOT_A_KEY = "Invalid credentials: give a live API key (noti_…) as the password."
NOT_ADMIN = "This API key lacks the admin scope, which the admin UI needs: use a key with the admin scope."

LoginProblem = Literal["not_a_key", "not_admin"]


def login_message(problem: LoginProblem) -> str:
    """What the login page says for a refused key."""
    return NOT_ADMIN if problem == "not_admin" else NOT_A_KEY


class SessionCookies:
    """Starlette's signed session cookie, marked ``Secure`` whenever the request came over https.

    The scheme is the one the server saw: behind a TLS-terminating proxy it is https only when
    the proxy is trusted (``NOTI_GATEWAY_FORWARDED_ALLOW_IPS``, applied by uvicorn).
    """

    def __init__(self, app: ASGIApp, secret_key: str, path: str) -> None:
        options = {"secret_key": secret_key, "session_cookie": COOKIE, "max_age": SESSION_SECONDS, "path": path}
        self.plain = SessionMiddleware(app, same_site="strict", https_only=False, **options)  # type: ignore[arg-type]
        self.secure = SessionMiddleware(app, same_site="strict", https_only=True, **options)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chosen = self.secure if scope.get("scheme") in ("https", "wss") else self.plain
        await chosen(scope, receive, send)


class AdminKeyLogin(AuthenticationBackend):
    """sqladmin's login hooks over API keys and Redis-held sessions."""

    def __init__(self, verifier: KeyVerifier, redis: aioredis.Redis, secret: str, path: str) -> None:
        super().__init__(secret_key=secret)
        self.middlewares = [Middleware(SessionCookies, secret_key=secret, path=path)]
        self.verifier = verifier
        self.redis = redis

    async def check_key(self, key: str) -> Principal | LoginProblem:
        """The admin key's principal, or why it cannot log in."""
        principal = await run_in_threadpool(self.verifier.verify, key) if key else None
        if principal is None:
            return "not_a_key"
        if not principal.allows(KeyScope.ADMIN):
            return "not_admin"
        return principal

    async def start(self, request: Request, principal: Principal, user: str) -> None:
        """Open a session for ``principal`` (after a successful ``check_key``)."""
        sid = secrets.token_urlsafe(32)
        await self.redis.set(admin_session(sid), str(principal.id), ex=SESSION_SECONDS)
        request.session.clear()
        request.session.update({"sid": sid, "key": principal.id, "user": user or principal.name})

    async def login(self, request: Request) -> bool:
        form = await request.form()
        checked = await self.check_key(str(form.get("password") or ""))
        if isinstance(checked, str):
            return False
        await self.start(request, checked, str(form.get("username") or ""))
        return True

    async def logout(self, request: Request) -> bool:
        sid = request.session.get("sid")
        if isinstance(sid, str):
            await self.redis.delete(admin_session(sid))
        request.session.clear()
        return False  # to the login page

    async def authenticate(self, request: Request) -> bool:
        sid, key_id = request.session.get("sid"), request.session.get("key")
        if not isinstance(sid, str) or not isinstance(key_id, int):
            return False
        stored = await self.redis.get(admin_session(sid))
        principal = await run_in_threadpool(self.verifier.by_id, key_id) if stored == str(key_id).encode() else None
        if principal is None or not principal.allows(KeyScope.ADMIN):
            if stored is not None:
                await self.redis.delete(admin_session(sid))
            request.session.clear()
            return False
        return True

    async def get_user_id(self, request: Request) -> object:
        return request.session.get("user")
