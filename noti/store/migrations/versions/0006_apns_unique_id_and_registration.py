"""APNs' unique id on each record, and when each device last registered its token

``notifications.apns_unique_id`` keeps the ``apns-unique-id`` the sandbox answers with: the
id Apple's Push Notifications Console looks a delivery up by. ``devices.registered_at`` is
the last time the app registered (or re-registered) the token: a 410 whose timestamp is
older than it must not deactivate the device. Existing devices count as registered when
they were last updated.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("apns_unique_id", sa.String(length=36), nullable=True))
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("registered_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE devices SET registered_at = updated_at")


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("registered_at")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("apns_unique_id")
