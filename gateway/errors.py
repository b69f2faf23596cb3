"""Every error the API answers is JSON ``{"detail": ..., "errors": [...]}`` (see ``schemas.Error``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from noti.gateway.schemas import MAX_NESTING, Error, ErrorItem

log = logging.getLogger(__name__)

# Declared on every API route so the schema lists what a client can meet.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "No API key, or not a live one"},
    403: {"model": Error, "description": "The API key lacks the scope this route needs"},
    429: {"model": Error, "description": "The API key's rate limit; see Retry-After"},
    503: {"model": Error, "description": "The database or Redis is unreachable"},
}


class ApiError(Exception):
    """An answer other than success, with a message safe to show the caller."""

    def __init__(
        self, status_code: int, detail: str, *, errors: list[ErrorItem] | None = None, headers: Mapping[str, str] = {}
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers)


def invalid(field: str, message: str) -> ApiError:
    """A 422 for one field."""
    return ApiError(422, f"invalid request: {field}: {message}", errors=[ErrorItem(field=field, message=message)])


def error_response(status_code: int, detail: str, errors: list[ErrorItem] | None = None, **kw: Any) -> JSONResponse:
    body = Error(detail=detail, errors=errors).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status_code, **kw)


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def _message(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", "invalid"))
    # pydantic prefixes messages from our validators with "Value error, "
    return message.removeprefix("Value error, ")


def error_items(errors: Iterable[Mapping[str, Any]], at: tuple[int | str, ...] = ()) -> list[ErrorItem]:
    """pydantic's errors as ours, their locations under ``at`` (e.g. ``("body", "devices", 3)``)."""
    return [ErrorItem(field=_field((*at, *tuple(e.get("loc", ())))), message=_message(e)) for e in errors]


def summary(items: Iterable[ErrorItem]) -> str:
    """The first few problems on one line."""
    return "; ".join(f"{item.field}: {item.message}" for item in list(items)[:5])


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.detail, exc.errors, headers=exc.headers)


def is_json(content_type: str | None) -> bool:
    """Whether a content-type header names JSON (``application/json``, ``application/*+json``)."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def not_json_message(content_type: str | None) -> str:
    """What to tell a client whose body is not JSON by its content-type (curl -d sends a form)."""
    sent = f"this one came as {content_type.partition(';')[0].strip()}" if content_type else "this one had none"
    return f"send the body as JSON with the header content-type: application/json ({sent})"


# What pydantic says of a body that is not an object or a list (FastAPI hands a non-JSON body over as bytes).
_NOT_A_DOCUMENT = frozenset({"model_attributes_type", "dict_type", "model_type", "list_type"})


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    content_type = request.headers.get("content-type")
    errors = list(exc.errors())
    if not is_json(content_type) and any(e["loc"] == ("body",) and e["type"] in _NOT_A_DOCUMENT for e in errors):
        items = [ErrorItem(field="body", message=not_json_message(content_type))]
    else:
        items = error_items(errors)
    return error_response(422, f"invalid request: {summary(items)}", items)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else "error"
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such route"
    elif exc.status_code == 405:
        detail = "method not allowed on this route"
    elif exc.status_code == 400:  # FastAPI's answer to a body it cannot decode: same shape as other bad input
        message = "not a JSON document in UTF-8"
        if isinstance(exc.__cause__, RecursionError):  # the JSON parser's own depth limit
            message = f"nested too deeply (objects and arrays nest at most {MAX_NESTING} levels)"
        return error_response(422, f"invalid request: body: {message}", [ErrorItem(field="body", message=message)])
    return error_response(exc.status_code, detail, headers=exc.headers)


# What a store or Redis outage raises (refused, lost, or no answer within its bound): answered 503.
OUTAGES: tuple[type[Exception], ...] = (
    OperationalError, PoolTimeout, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
)  # fmt: skip


def unavailable(exc: Exception) -> ApiError:
    """The 503 for an outage of the store or Redis (one of ``OUTAGES``)."""
    # The exception text may hold a host or user name: log its type only, answer generically.
    what = "Redis" if isinstance(exc, redis.exceptions.RedisError) else "the database"
    log.warning("answering 503: %s unreachable (%s)", what, type(exc).__name__)
    return ApiError(503, f"{what} is unreachable; try again shortly", headers={"Retry-After": "1"})


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return await _api_error(request, unavailable(exc))


async def _unstorable(_request: Request, exc: Exception) -> JSONResponse:
    # Input validation should have caught it; answer as the client's error, never a 500.
    log.warning("answering 422: the store refused a value (%s)", type(exc).__name__)
    return error_response(422, "invalid request: a value cannot be stored (out of range or not allowed in text)")


async def _internal(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    # Said, not done silently: uvicorn closes the connection after an unhandled error, and a client
    # that reuses it otherwise gets a reset on its next request.
    return error_response(500, "internal error", headers={"Connection": "close"})


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for outage in OUTAGES:
        app.add_exception_handler(outage, _unavailable)
    app.add_exception_handler(DataError, _unstorable)
    app.add_exception_handler(Exception, _internal)


def openapi_error_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Make the schema's 422 bodies the ``Error`` shape this API really answers with."""
    components = schema.get("components", {}).get("schemas", {})
    if "HTTPValidationError" in components:
        components["HTTPValidationError"] = {"$ref": "#/components/schemas/Error"}
        components.pop("ValidationError", None)
    return schema
