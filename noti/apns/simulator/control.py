"""The simulator's control plane: commands on a process's state, and the HTTP JSON API that runs them.

Routes (JSON in and out): ``GET /counters`` (``live_activities`` counts accepted Live Activity
pushes by event and priority, ``"update/10"``: the 10s are what a device's budget pays for);
``POST /faults`` (a partial :class:`Faults`); ``POST /reset`` (counters); ``POST /keys``
(``{"team_id", "key_id", "bundle_ids": [...], "public_key_pem"}``); ``POST /devices``
(``{"devices": {token: [topic, ...]}}``: turns the device registry on, where unknown tokens
get BadDeviceToken and each token its topics; a token given as ``{"topics": [...],
"unregistered_at": ms}`` or ``{..., "expired_at": ms}`` is answered 410 Unregistered or
ExpiredToken with that timestamp, whatever its kind: a push-to-start or update token on
``<bundle>.push-type.liveactivity`` as well as a device token);
``DELETE /devices`` (registry off). A bad argument gets 400 ``{"error": ...}``, an unknown
route 404 ``{"error": ...}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from noti.apns.simulator.rules import RegisteredKey
from noti.apns.simulator.state import State

Command = Callable[[str, Any], Awaitable[Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def apply(state: State, command: str, argument: Any) -> Any:
    """Run one control command on one process's state; its JSON answer."""
    if command == "counters":
        return state.counters()
    if command == "faults":
        if not isinstance(argument, dict):
            raise ValueError("faults: give a JSON object of fault settings")
        state.set_faults(argument)
        return asdict(state.faults)
    if command == "reset":
        state.reset()
        return {"reset": True}
    if command == "keys":
        state.register(
            RegisteredKey(
                argument["team_id"], argument["key_id"], tuple(argument["bundle_ids"]), argument["public_key_pem"]
            )
        )
        return {"registered": f"{argument['team_id']}/{argument['key_id']}"}
    if command == "devices":
        if not isinstance(argument, dict) or not isinstance(argument.get("devices"), dict):
            raise ValueError('devices: give {"devices": {"<token>": ["<topic>", ...]}}')
        return {"devices": state.add_devices(argument["devices"])}
    if command == "clear_devices":
        state.clear_devices()
        return {"devices": None}
    raise ValueError(f"unknown command {command}")


def merge_counters(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One set of counters from every worker's."""
    by_outcome: Counter[str] = Counter()
    by_token: Counter[str] = Counter()
    live_activities: Counter[str] = Counter()
    token_ids: set[str] = set()
    forgotten = 0
    for part in parts:
        by_outcome.update(part["by_outcome"])
        by_token.update(part["by_token"])
        live_activities.update(part.get("live_activities", {}))
        token_ids.update(part["provider_token_ids"])
        forgotten += part.get("tokens_forgotten", 0)
    return {
        "total": sum(by_outcome.values()),
        "by_outcome": dict(by_outcome),
        "by_token": dict(by_token),
        "live_activities": dict(live_activities),
        "tokens_forgotten": forgotten,
        "provider_tokens": len(token_ids),
        "provider_token_ids": sorted(token_ids),
        "channels": _merge_channels([part["channels"] for part in parts if "channels" in part]),
    }


def _merge_channels(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Workers' channel counters summed (numbers, and counts by channel and by reason)."""
    merged: dict[str, Any] = {}
    for part in parts:
        for name, value in part.items():
            if isinstance(value, dict):
                merged.setdefault(name, Counter()).update(value)
            else:
                merged[name] = merged.get(name, 0) + value
    return {name: dict(value) if isinstance(value, Counter) else value for name, value in merged.items()}


ROUTES = {
    ("GET", "/counters"): "counters",
    ("POST", "/faults"): "faults",
    ("POST", "/reset"): "reset",
    ("POST", "/keys"): "keys",
    ("POST", "/devices"): "devices",
    ("DELETE", "/devices"): "clear_devices",
}


def control_app(command: Command) -> web.Application:
    """The control API over ``command`` (which runs a command on every worker)."""

    @web.middleware
    async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return web.json_response({"error": f"no such control route: {request.method} {request.path}"}, status=404)

    def route(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            raw = await request.read()
            try:
                argument = await request.json() if raw.strip() else {}
                answer = await command(name, argument)
            except (ValueError, KeyError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return web.json_response(answer)

        return handle

    app = web.Application(middlewares=[json_errors])
    for (method, path), name in ROUTES.items():
        handler = route(name)
        app.router.add_route(method, path, handler)
        app.router.add_route(method, path + "/", handler)
    return app


class ControlServer:
    """The control API on a TCP port."""

    def __init__(self, command: Command) -> None:
        self._runner = web.AppRunner(control_app(command), access_log=None)
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()
