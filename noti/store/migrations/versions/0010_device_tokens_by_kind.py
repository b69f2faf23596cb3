"""Tokens by kind: push-to-start, Live Activity update and VoIP tokens of each device

``device_tokens`` holds a device's tokens other than its device token, one per (device,
kind, slot): the slot is the attributes type of a push-to-start token, the activity id of
an update token, empty for the VoIP token. Each has its own ``registered_at``, so a 410
dated before the token's latest registration leaves it active. Records sent to such a
token name it (``notifications.token_id``), with the Live Activity's ``event`` and
``activity_id`` for the history.

Revision ID: 0010
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "device_tokens",
        sa.Column("id", _BIG_ID, primary_key=True),
        sa.Column("device_id", _BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("slot", sa.String(length=255), nullable=False),
        sa.Column("token", sa.String(length=200), nullable=False),
        sa.Column("attributes_type", sa.String(length=255), nullable=True),
        sa.Column("activity_id", sa.String(length=255), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('push_to_start', 'update', 'voip')", name=op.f("ck_device_tokens_token_kind")),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_tokens_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_tokens")),
        sa.UniqueConstraint("device_id", "kind", "slot", name=op.f("uq_device_tokens_device_id_kind_slot")),
    )
    op.create_index(op.f("ix_device_tokens_token"), "device_tokens", ["token"])
    op.create_index(
        op.f("ix_device_tokens_kind_attributes_type_is_active"),
        "device_tokens",
        ["kind", "attributes_type", "is_active"],
    )
    op.create_index(op.f("ix_device_tokens_activity_id"), "device_tokens", ["activity_id"])
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("token_id", _BIG_ID, nullable=True))
        batch.add_column(sa.Column("activity_id", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("event", sa.String(length=10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("event")
        batch.drop_column("activity_id")
        batch.drop_column("token_id")
    op.drop_table("device_tokens")
