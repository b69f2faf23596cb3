"""The credential each notification was queued for

``notifications.credential`` is the ``<namespace>/<name>`` of the APNsCredential whose
queue a notification went to (the one serving its app and environment when it was sent).
Records written before it are NULL: they were queued by bundle id.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("credential", sa.String(length=317), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("credential")
