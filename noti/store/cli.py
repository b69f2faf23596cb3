"""``noti migrate`` and ``noti retention``: the store's schema migrations and how long records stay."""

from __future__ import annotations

import sys

import click

from noti.settings import get_settings
from noti.store import migrate as migrations
from noti.store.db import DatabaseUnavailable, make_engine, safe_url
from noti.store.migrate import reachable
from noti.store.retention import retention_policy, run_retention


@click.command("migrate")
@click.option("--database-url", envvar="NOTI_DATABASE_URL", show_envvar=True, help="The store to migrate.")
@click.option("--revision", default=None, help="Target revision (default: head when upgrading, base when downgrading).")
@click.option("--down", is_flag=True, help="Downgrade instead of upgrade (to base: drops every Noti table).")
@click.option("--yes", is_flag=True, help="Do not ask before --down drops tables and their data.")
def migrate(database_url: str | None, revision: str | None, down: bool, yes: bool) -> None:
    """Apply the store's migrations to PostgreSQL or SQLite."""
    url = database_url or get_settings().store.database_url
    target = revision or ("base" if down else "head")
    try:
        migrations.check_revision(target)
        engine = make_engine(url, pool_size=1, create=not down)
    except (DatabaseUnavailable, migrations.RevisionError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if down:
            _confirm_down(safe_url(url), target, yes)
            migrations.downgrade(engine, target)
        else:
            migrations.upgrade(engine, target)
        current = migrations.current_revision(engine)
    except (DatabaseUnavailable, migrations.RevisionError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(f"{safe_url(url)} is at revision {current or 'base'}")


def _confirm_down(url: str, target: str, yes: bool) -> None:
    """Dropping tables loses data: ask on a terminal, refuse without --yes anywhere else."""
    what = "drops every Noti table and its data" if target == "base" else f"drops what came after revision {target}"
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.ClickException(f"noti migrate --down {what} in {url}: pass --yes to do it without a terminal")
    click.confirm(f"noti migrate --down {what} in {url}. Go on?", abort=True)


@click.group("retention")
def retention() -> None:
    """Remove delivery records past their age (PostgreSQL: whole day partitions)."""


@retention.command("run")
@click.option("--database-url", envvar="NOTI_DATABASE_URL", show_envvar=True, help="The store to trim.")
@click.option(
    "--records-days", type=click.FloatRange(min=0, min_open=True), envvar="NOTI_RETENTION_RECORDS_DAYS",
    show_envvar=True, help="Remove delivery records older than this many days (default 30).",
)  # fmt: skip
@click.option(
    "--rollup-days", type=click.FloatRange(min=0, min_open=True), envvar="NOTI_RETENTION_ROLLUP_DAYS",
    show_envvar=True, help="Remove hourly roll-up rows (stats) older than this many days (default 400).",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Say what would be removed, remove nothing.")
def retention_run(
    database_url: str | None, records_days: float | None, rollup_days: float | None, dry_run: bool
) -> None:
    """Remove old records and roll-up rows, and create the record partitions of the days ahead."""
    settings = get_settings().store
    try:
        policy = retention_policy(settings, records_days=records_days, rollup_days=rollup_days)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    url = database_url or settings.database_url
    try:
        engine = make_engine(url, pool_size=1, create=False)
    except DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if migrations.current_revision(engine) is None:
            raise DatabaseUnavailable(f"{safe_url(url)} holds no Noti schema: run `noti migrate` first")
        with reachable(engine):
            report = run_retention(engine, policy, dry_run=dry_run)
    except DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(f"{safe_url(url)}: {report.summary()}")
