"""What every admin response carries and what every state-changing admin request must show.

- Pages may not be framed (``X-Frame-Options: DENY`` and CSP ``frame-ancestors 'none'``) and
  load nothing from elsewhere (no CDN: sqladmin's assets and ours are served locally).
- A POST, PUT, PATCH or DELETE must come from a page of the admin's own host: browsers send
  ``Origin`` (or at least ``Referer``) on them, and a page on another site cannot forge either.
  A request with neither is refused too: the session cookie alone proves nothing (CSRF).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; object-src 'none'"
)
HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
CROSS_ORIGIN = "Forbidden: this admin request came from another site ({origin}); submit the form from the admin itself."


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def own_origin(scope: Scope) -> str:
    """scheme://host[:port] the browser used to reach the admin."""
    host = Headers(scope=scope).get("host")
    if host is None:
        server = scope.get("server") or ("localhost", None)
        host = f"{server[0]}:{server[1]}" if server[1] else str(server[0])
    return f"{scope.get('scheme', 'http')}://{host}".lower()


def cross_origin(method: str, headers: Headers, own: str) -> str | None:
    """The foreign origin a state-changing request came from ('unknown' without Origin/Referer), else None."""
    if method.upper() in SAFE_METHODS:
        return None
    claimed = headers.get("origin")
    if claimed is None or claimed == "null":
        referer = headers.get("referer")
        claimed = (_origin(referer) if referer else None) or claimed
    if claimed is None:
        return "unknown"
    # Sites are told apart by host and port. The scheme is not compared: behind a proxy that
    # terminates https and is not in NOTI_GATEWAY_FORWARDED_ALLOW_IPS the gateway sees http
    # while the browser's Origin says https, and a page on the same host is not another site.
    return None if urlsplit(claimed.lower()).netloc == urlsplit(own).netloc else claimed


class AdminGuard:
    """ASGI middleware of the admin app: the security headers, and the same-origin rule for changes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
            await send(message)

        foreign = cross_origin(scope["method"], Headers(scope=scope), own_origin(scope))
        if foreign is not None:
            await PlainTextResponse(CROSS_ORIGIN.format(origin=foreign), status_code=403)(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)
