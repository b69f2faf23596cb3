"""What a request must show before its body is read: a live API key, a size within bounds, a client that sends it.

A body is read only for a request whose key checks out, so an unauthenticated client cannot make
the gateway parse megabytes (401 first); a body over the limit is refused by its Content-Length,
or as soon as it grows past it (413); a body that trickles in is cut off (408). The body is then
handed to the route as it came.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from noti.gateway.errors import ApiError, error_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
Authenticate = Callable[[str | None, str], Awaitable[Any]]  # (Authorization header, client address) -> principal
WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def replaying(message: Message, receive: Receive) -> Receive:
    """A receive that gives ``message`` (a whole body, already read) first, then what ``receive`` gives."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return message
        return await receive()  # after the body: only a disconnect can come

    return replay


class BodyGuard:
    """ASGI middleware for the API's routes that take a body (not the admin UI, which has its own login)."""

    def __init__(
        self, app: App, *, authenticate: Authenticate, max_bytes: int, read_seconds: float, prefix: str = "/api/"
    ) -> None:
        self.app, self.authenticate = app, authenticate
        self.max_bytes, self.read_seconds, self.prefix = max_bytes, read_seconds, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WITH_BODY or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        client = scope.get("client")
        try:
            principal = await self.authenticate(headers.get("authorization"), client[0] if client else "unknown")
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise ApiError(413, self._too_large())
            body = await self._read(receive)
        except ApiError as error:
            response = error_response(error.status_code, error.detail, headers=error.headers)
            if error.status_code in (408, 413):  # the rest of the body may still be on its way
                response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, replaying({"type": "http.request", "body": body, "more_body": False}, receive), send)

    def _too_large(self) -> str:
        return f"the body is larger than {self.max_bytes} bytes (NOTI_GATEWAY_MAX_BODY_BYTES): send less at once"

    async def _read(self, receive: Receive) -> bytes:
        deadline = time.monotonic() + self.read_seconds
        chunks: list[bytes] = []
        size = 0
        while True:
            left = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(left, 0.001))
            except TimeoutError:
                raise ApiError(408, f"the body did not arrive within {self.read_seconds:g} s") from None
            if message["type"] == "http.disconnect":
                raise ApiError(400, "the client went away before its body arrived")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise ApiError(413, self._too_large())
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
