"""Self-hosted API docs: Swagger UI and ReDoc with their JS/CSS served from the installed package.

The gateway runs in clusters without internet, so nothing is loaded from a CDN. The assets
come from the ``fastapi-offline`` distribution (Swagger UI bundle and CSS, ReDoc standalone).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from noti.gateway.routing import SlashRouter

SCHEMA = "/api/schema/"
SWAGGER = "/api/docs/"
REDOC = "/api/redoc/"
ASSETS = "/api/docs-assets"
ASSET_DIR = Path(fastapi_offline.__file__).parent / "static"
# The pages may load nothing from elsewhere (ReDoc would fetch its logo from a CDN).
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:"
)


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page


def add_models(schema: dict[str, Any], models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    """Put ``models`` (bodies a route reads itself, named in its ``openapi_extra``) into the schema's components."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in found.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault(model.__name__, found)
    return schema


def install(app: FastAPI) -> None:
    """Serve the schema, Swagger UI, ReDoc and their assets (each path with and without the slash)."""
    app.mount(ASSETS, StaticFiles(directory=ASSET_DIR), name="docs-assets")
    router = SlashRouter(include_in_schema=False)

    @router.get(SCHEMA)
    async def schema() -> dict[str, object]:
        return app.openapi()

    @router.get(SWAGGER)
    async def swagger() -> HTMLResponse:
        return _offline(
            get_swagger_ui_html(
                openapi_url=SCHEMA,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS}/favicon.png",
                swagger_ui_parameters={"persistAuthorization": True},
            )
        )

    @router.get(REDOC)
    async def redoc() -> HTMLResponse:
        return _offline(
            get_redoc_html(
                openapi_url=SCHEMA,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{ASSETS}/redoc.standalone.js",
                redoc_favicon_url=f"{ASSETS}/favicon.png",
                with_google_fonts=False,
            )
        )

    app.include_router(router)
