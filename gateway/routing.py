"""Routes answer with and without a trailing slash, without redirecting.

The original API's clients call ``/api/devices/``; others call ``/api/devices``. A redirect
would make clients re-send POST bodies (many drop them), so each route is registered under
both paths; only the canonical one appears in the schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter


def other_form(path: str) -> str | None:
    """The path with its trailing slash toggled (None for ``/``)."""
    if path == "/" or not path:
        return None
    return path[:-1] if path.endswith("/") else path + "/"


class SlashRouter(APIRouter):
    """An APIRouter whose every route also answers on the other slash form of its path."""

    def add_api_route(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        super().add_api_route(path, endpoint, **kwargs)
        alias = other_form(path)
        if alias is not None:
            twin = {**kwargs, "include_in_schema": False}
            if kwargs.get("operation_id"):
                twin["operation_id"] = f"{kwargs['operation_id']}_alt"
            super().add_api_route(alias, endpoint, **twin)
