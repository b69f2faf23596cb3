"""The single send's plain path: a well-formed ``POST /api/notifications/`` served without FastAPI's per-request work.

Single sends are the gateway's hot path, and FastAPI spends about a third of a send's CPU on
matching routers and solving dependencies (py-spy, bench/bench_gateway.py --profile). A request
that is plainly well-formed — a JSON content-type, no query string, no Idempotency-Key, a body
that validates as ``NotificationIn`` — is served here by the code the FastAPI route runs
(``admit``, then ``accept_one``). Anything else goes on to the FastAPI route, so every refusal is
that route's own answer, and the two cannot drift apart in what they refuse.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Message, Receive, Send

from noti.gateway.auth import Scope as KeyScope
from noti.gateway.bodies import replaying
from noti.gateway.context import admit
from noti.gateway.notifications import accept_one
from noti.gateway.schemas import NotificationIn

Scope = MutableMapping[str, Any]
# Content-types FastAPI reads as JSON that need no parsing to recognise; others take the FastAPI route.
_JSON = frozenset({b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8"})
_PASSED = "noti.plain_send.passed"  # set on a request handed on to the FastAPI route, so it is not matched again


def plain_body(scope: Scope, message: Message) -> NotificationIn | None:
    """The validated send of a plainly well-formed request, or None for one the FastAPI route must answer."""
    if message["type"] != "http.request" or message.get("more_body", False):
        return None
    content_type = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.lower()
        elif name == b"idempotency-key":
            return None
    body = message.get("body", b"")
    if content_type not in _JSON or not body:
        return None
    try:
        document = json.loads(body)  # as FastAPI's Request.json(): the same NaN and nesting behaviour
        return NotificationIn.model_validate(document, from_attributes=True)
    except (ValueError, RecursionError, ValidationError):
        return None


class PlainSend(BaseRoute):
    """Placed before the FastAPI routes; ``path`` is the FastAPI route's, so metrics label both alike."""

    def __init__(self, path: str) -> None:
        self.path = path

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if (
            scope["type"] == "http"
            and scope["path"] == self.path
            and scope["method"] == "POST"
            and not scope.get("query_string")
            and _PASSED not in scope
        ):
            return Match.FULL, {"route": self, "path_params": {}}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()  # BodyGuard has read the whole body: it comes in one message
        body = plain_body(scope, message)
        if body is None:
            await self._hand_on(scope, message, receive, send)
            return
        request = Request(scope, receive)
        principal = await admit(request, KeyScope.SEND)
        response = await accept_one(request, principal, body, None)
        await response(scope, receive, send)

    async def _hand_on(self, scope: Scope, message: Message, receive: Receive, send: Send) -> None:
        """Route the request again, past this route, with its body as it came."""
        scope[_PASSED] = True
        await scope["router"].app(scope, replaying(message, receive), send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)  # it has no name: url_for finds the FastAPI route

    def __repr__(self) -> str:
        return f"PlainSend(path={self.path!r})"


def install(routes: list[BaseRoute]) -> None:
    """Put the plain path in front of both slash forms of the send route."""
    routes[:0] = [PlainSend("/api/notifications/"), PlainSend("/api/notifications")]
