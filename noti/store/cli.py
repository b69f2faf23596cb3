"""``noti migrate``: apply or revert the store's schema migrations."""

from __future__ import annotations

import click

from noti.settings import get_settings
from noti.store import migrate as migrations
from noti.store.db import DatabaseUnavailable, make_engine, safe_url


@click.command("migrate")
@click.option("--database-url", envvar="NOTI_DATABASE_URL", help="Overrides NOTI_DATABASE_URL.")
@click.option("--revision", default=None, help="Target revision (default: head when upgrading, base when downgrading).")
@click.option("--down", is_flag=True, help="Downgrade instead of upgrade.")
def migrate(database_url: str | None, revision: str | None, down: bool) -> None:
    """Apply the store's migrations to PostgreSQL or SQLite."""
    url = database_url or get_settings().database_url
    engine = make_engine(url, pool_size=1)
    try:
        if down:
            migrations.downgrade(engine, revision or "base")
        else:
            migrations.upgrade(engine, revision or "head")
        current = migrations.current_revision(engine)
    except DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(f"{safe_url(url)} is at revision {current or 'base'}")
