"""Apply and revert the store's Alembic migrations (``noti migrate``)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from noti.store.db import DatabaseUnavailable, safe_url

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


class RevisionError(ValueError):
    """A migration target that does not exist or cannot be reached from here; the message lists the known ones."""


def revisions() -> list[str]:
    """Every migration revision, oldest first."""
    return [script.revision for script in reversed(list(ScriptDirectory(str(MIGRATIONS)).walk_revisions()))]


def _unknown(revision: str, why: str) -> RevisionError:
    return RevisionError(f"{why}: give head, base or one of {', '.join(revisions())} as --revision")


def check_revision(revision: str) -> None:
    """Refuse an unknown target before anything is connected to (relative targets are checked when run)."""
    if re.search(r"[+-]", revision):
        return
    try:
        ScriptDirectory(str(MIGRATIONS)).get_revisions(revision)
    except CommandError:
        raise _unknown(revision, f"no migration revision {revision!r}") from None


@contextlib.contextmanager
def reachable(engine: Engine) -> Iterator[None]:
    """A database that cannot be reached is a DatabaseUnavailable saying so (no password)."""
    try:
        yield
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot reach the database {safe_url(engine.url)}: {reason}") from None


def _run(engine: Engine, action: str, revision: str) -> None:
    check_revision(revision)
    config = _config(engine)
    with reachable(engine):
        try:
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                getattr(command, action)(config, revision)
        except CommandError as exc:
            raise _unknown(revision, str(exc).rstrip(".")) from None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision``."""
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Take the schema down to ``revision`` (``base`` drops everything Noti created)."""
    _run(engine, "downgrade", revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with reachable(engine), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def revision(engine: Engine, message: str) -> None:
    """Autogenerate a new migration from the models (a development aid)."""
    config = _config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)
