"""Alembic environment: the connection comes from ``noti.store.migrate``."""

from __future__ import annotations

from alembic import context

from noti.store.models import Base
from noti.store.retention import is_partition


def _models_only(name: str | None, type_: str, _parent: object) -> bool:
    """Autogenerate compares the models' tables, not the day partitions of notifications."""
    return not (type_ == "table" and name is not None and is_partition(name))


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
    include_name=_models_only,
)
with context.begin_transaction():
    context.run_migrations()
