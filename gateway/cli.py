"""``noti gateway`` serves the REST API; ``noti apikey`` creates, lists and revokes API keys."""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING

import click

from noti.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine


@click.command()
@click.option("--host", default=None, help="Listen address [default: NOTI_GATEWAY_HOST]")
@click.option("--port", type=int, default=None, help="Listen port [default: NOTI_GATEWAY_PORT]")
@click.option("--workers", type=int, default=None, help="Worker processes [default: NOTI_GATEWAY_WORKERS]")
def gateway(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the REST API, docs, admin UI and metrics (uvicorn; uvloop and httptools when installed)."""
    import uvicorn

    settings = get_settings().gateway
    _check_tracing(settings.tracing_enabled)
    uvicorn.run(
        "noti.gateway.app:app_from_environment",
        factory=True,
        host=host or settings.gateway_host,
        port=port if port is not None else settings.gateway_port,
        workers=workers or settings.gateway_workers,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        access_log=settings.gateway_access_log,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        forwarded_allow_ips=settings.gateway_forwarded_allow_ips,
        server_header=False,
        timeout_graceful_shutdown=20,
    )


def _check_tracing(enabled: bool) -> None:
    from noti.tracing import TracingUnavailable, check_available

    if enabled:
        try:
            check_available()
        except TracingUnavailable as exc:
            raise click.ClickException(str(exc)) from None


@click.group()
def apikey() -> None:
    """Create, list and revoke gateway API keys (stored hashed; a key is shown once)."""


def _engine() -> Engine:
    """The store, migrated to this version's schema; a clear error, and nothing created, otherwise."""
    from noti.store import migrate
    from noti.store.db import DatabaseUnavailable, make_engine, safe_url

    url = get_settings().store.database_url
    try:
        engine = make_engine(url, pool_size=1, create=False)
        current = migrate.current_revision(engine)
    except DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    if current != migrate.head_revision():
        engine.dispose()
        found = f"is at revision {current}" if current else "has no Noti schema"
        raise click.ClickException(f"the database {safe_url(url)} {found}: run `noti migrate` first")
    return engine


@apikey.command("create")
@click.option("--name", required=True, help="Who or what uses the key.")
@click.option("--scopes", default="send,read", show_default=True, help="Comma-separated: send, read, admin.")
def create(name: str, scopes: str) -> None:
    """Create a key and print it (the only time it is shown)."""
    from noti.gateway.auth import Scope, create_api_key

    try:
        parsed = Scope.parse(scopes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scopes") from None
    engine = _engine()
    try:
        key = create_api_key(engine, name, parsed)
    finally:
        engine.dispose()
    click.echo(key)
    click.echo(f"scopes: {','.join(s.value for s in parsed)} (store the key now: it cannot be shown again)", err=True)


@apikey.command("revoke")
@click.argument("name_or_prefix")
def revoke(name_or_prefix: str) -> None:
    """Revoke the keys with this name or prefix."""
    from noti.gateway.auth import revoke_api_key

    engine = _engine()
    try:
        count = revoke_api_key(engine, name_or_prefix)
    finally:
        engine.dispose()
    if not count:
        click.echo(f"no live API key named or prefixed {name_or_prefix!r}", err=True)
        sys.exit(1)
    click.echo(f"revoked {count} key(s); running gateways stop accepting them within their key cache time")


@apikey.command("list")
def list_keys() -> None:
    """List keys: name, prefix, scopes, state (never the key)."""
    from noti.gateway.auth import list_api_keys

    engine = _engine()
    try:
        keys = list_api_keys(engine)
    finally:
        engine.dispose()
    for key in keys:
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "live"
        used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
        click.echo(f"{key.prefix}\t{key.name}\t{','.join(key.scopes)}\t{state}\tlast used {used}")
