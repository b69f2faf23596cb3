"""Conventions of every route: both slash forms of its path, and no query parameter it does not take.

The original API's clients call ``/api/devices/``; others call ``/api/devices``. A redirect
would make clients re-send POST bodies (many drop them), so each route is registered under
both paths; only the canonical one appears in the schema.

A query parameter a route does not take is a 422, never ignored: a client of the original
API paging with ``?page=2`` would otherwise get the first page again, silently.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from noti.gateway.errors import ApiError
from noti.gateway.schemas import Error, ErrorItem

_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": Error, "description": "Invalid input, or a query parameter this route does not take"}
}
_PAGING = frozenset({"page", "page_size", "per_page", "offset", "start"})


def other_form(path: str) -> str | None:
    """The path with its trailing slash toggled (None for ``/``)."""
    if path == "/" or not path:
        return None
    return path[:-1] if path.endswith("/") else path + "/"


def unknown_query_problem(name: str, known: Collection[str]) -> str:
    """Why the query parameter ``name`` is refused by a route that takes ``known``, and what to send instead."""
    if "cursor" in known and name in _PAGING:
        return "unknown query parameter: pages go by ?cursor= (next_cursor of the previous page) and ?limit="
    if not known:
        return "unknown query parameter: this route takes none"
    return f"unknown query parameter: this route takes {', '.join(sorted(known))}"


def _query_names(dependant: Dependant) -> set[str]:
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _refuse_unknown(known: Collection[str]) -> Callable[[Request], Awaitable[None]]:
    # async although it never awaits: FastAPI runs a plain function dependency in a worker thread,
    # a hand-off per request that cost the send path ~5 % of its CPU.
    async def check(request: Request) -> None:
        unknown = [name for name in dict.fromkeys(request.query_params) if name not in known]
        if unknown:
            items = [ErrorItem(field=f"query.{name}", message=unknown_query_problem(name, known)) for name in unknown]
            raise ApiError(422, f"invalid request: {items[0].field}: {items[0].message}", errors=items)

    return check


class SlashRouter(APIRouter):
    """An APIRouter whose every route also answers on the other slash form of its path and refuses unknown
    query parameters."""

    def add_api_route(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        known: set[str] = set()  # filled in once the route knows its parameters
        kwargs["dependencies"] = [*(kwargs.get("dependencies") or ()), Depends(_refuse_unknown(known))]
        kwargs["responses"] = {**_INVALID, **(kwargs.get("responses") or {})}
        super().add_api_route(path, endpoint, **kwargs)
        route = self.routes[-1]
        assert isinstance(route, APIRoute)
        known.update(_query_names(route.dependant))
        alias = other_form(path)
        if alias is not None:
            twin = {**kwargs, "include_in_schema": False}
            if kwargs.get("operation_id"):
                twin["operation_id"] = f"{kwargs['operation_id']}_alt"
            super().add_api_route(alias, endpoint, **twin)
