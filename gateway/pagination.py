"""Cursor pagination: an opaque cursor holds the sort key of the last row seen, so pages stay cheap at any depth."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import Request

from noti.gateway.errors import invalid

T = TypeVar("T")


def encode_cursor(*key: Any) -> str:
    raw = orjson.dumps([str(part) if not isinstance(part, int) else part for part in key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *parsers: Callable[[Any], Any]) -> Any:
    """The sort key in ``cursor``, one value per parser (one value alone when one parser is given)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = orjson.loads(raw)
        if not isinstance(parts, list) or len(parts) != len(parsers):
            raise ValueError
        values = [parse(part) for parse, part in zip(parsers, parts, strict=True)]
    except (ValueError, TypeError, orjson.JSONDecodeError):
        message = "not a cursor this API gave out: pass next_cursor from the previous page"
        raise invalid("query.cursor", message) from None
    return values[0] if len(values) == 1 else tuple(values)


def next_url(request: Request, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    return str(request.url.include_query_params(cursor=cursor))
