"""Broadcast channels, and the channel a broadcast's record went to

``broadcast_channels`` holds the channels APNs created for each (app, environment): Apple's
channel id, its message storage policy (0 no storage, 1 most recent message), a name and
labels, and who manages it (``api``, or the LiveActivityChannel resource's namespace/name).
``notifications.channel_id`` marks a broadcast's one delivery record.

Revision ID: 0011
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json_type = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
    op.create_table(
        "broadcast_channels",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("app", sa.String(length=255), nullable=False),
        sa.Column("environment", sa.String(length=20), nullable=False),
        sa.Column("channel_id", sa.String(length=200), nullable=False),
        sa.Column("storage_policy", sa.SmallInteger(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("labels", json_type, nullable=False),
        sa.Column("source", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcast_channels")),
        sa.UniqueConstraint(
            "app", "environment", "channel_id", name=op.f("uq_broadcast_channels_app_environment_channel_id")
        ),
    )
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("channel_id", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("channel_id")
    op.drop_table("broadcast_channels")
