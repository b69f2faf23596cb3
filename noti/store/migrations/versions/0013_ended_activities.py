"""Live Activities that ended: ``device_tokens.ended_at``

An ``end`` sent to an activity sets its update token's ``ended_at`` (kept, not deleted, so
the token and its records stay readable); updates and ends by owner and attributes type
skip ended activities, and an update by activity id to one is refused.

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device_tokens") as batch:
        batch.add_column(sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_tokens") as batch:
        batch.drop_column("ended_at")
