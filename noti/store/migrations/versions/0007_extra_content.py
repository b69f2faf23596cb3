"""The content fields a record had no column for, in one JSON column

``notifications.extra_content`` holds every content field that is set and has no column of
its own (localization keys, interruption level, mutable content, Live Activity state …), so
a record keeps all of what was queued: a notification queued again from its record (``noti
dev`` after a restart, a resend from the admin) says what the first one said. NULL for the
records that set none of them, which costs a row nothing. Records written before keep
NULL: what they lacked was never stored.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("extra_content", json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("extra_content")
