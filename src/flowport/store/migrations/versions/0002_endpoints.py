"""models, endpoints, deployments and operations

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _times(updated: bool = True) -> list[sa.Column]:
    columns = [sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)]
    if updated:
        columns.append(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False))
    return columns


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("archived", sa.Boolean, nullable=False),
        *_times(updated=False),
    )
    op.create_table(
        "endpoints",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("secrets", sa.Text, nullable=False),
        *_times(),
    )
    op.create_table(
        "deployments",
        sa.Column(
            "endpoint", sa.String(64), sa.ForeignKey("endpoints.name", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        *_times(),
    )
    op.create_table(
        "operations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        *_times(),
    )


def downgrade() -> None:
    for table in ("operations", "deployments", "endpoints", "models"):
        op.drop_table(table)
