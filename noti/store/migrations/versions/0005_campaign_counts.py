"""campaign progress counted in the store

Senders counted a campaign's finished records in Redis when they acknowledged them, so a
crash between writing an outcome and acknowledging it lost the count (the redelivered
entry found its record final and was acknowledged uncounted), and a lost reply to a
successful EXEC could count twice. Outcomes now count in the transaction that writes them.
The upgrade counts what is already stored.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_counts",
        sa.Column("campaign", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("campaign", "status", name=op.f("pk_campaign_counts")),
    )
    op.execute(
        "INSERT INTO campaign_counts (campaign, status, count)"
        " SELECT campaign, status, count(*) FROM notifications"
        " WHERE campaign IS NOT NULL AND status IN ('sent', 'failed', 'invalid_token')"
        " GROUP BY campaign, status"
    )


def downgrade() -> None:
    op.drop_table("campaign_counts")
