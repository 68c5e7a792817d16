"""Initial schema: users, sessions, projects, items, media, claims, labels, skips.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

EXPRESSION_CK = "expression IN ('neutral', 'happy', 'sad', 'surprised', 'fearful', 'disgusted', 'angry')"
INTENSITY_CK = (
    "(expression = 'neutral' AND intensity IS NULL) OR "
    "(expression <> 'neutral' AND intensity IN ('slightly', 'normally', 'strongly'))"
)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("role IN ('admin', 'annotator')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("raters_per_item", sa.Integer(), nullable=False),
        sa.Column("quorum", sa.Integer(), nullable=False),
        sa.Column("lease_seconds", sa.Integer(), nullable=False),
        sa.Column("gold_every", sa.Integer(), nullable=False),
        sa.Column("guidelines", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("raters_per_item >= 1", name=op.f("ck_projects_raters")),
        sa.CheckConstraint("quorum >= 1 AND quorum <= raters_per_item", name=op.f("ck_projects_quorum")),
        sa.CheckConstraint("lease_seconds >= 1", name=op.f("ck_projects_lease")),
        sa.CheckConstraint("gold_every >= 0", name=op.f("ck_projects_gold_every")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_web_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_web_sessions_token_hash")),
    )
    op.create_index(op.f("ix_web_sessions_user_id"), "web_sessions", ["user_id"])
    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=True),
        sa.Column("meta", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("is_gold", sa.Boolean(), nullable=False),
        sa.Column("gold_expression", sa.String(16), nullable=True),
        sa.Column("gold_intensity", sa.String(16), nullable=True),
        sa.Column("max_labels", sa.Integer(), nullable=False),
        sa.Column("n_labels", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("n_labels >= 0 AND n_labels <= max_labels", name=op.f("ck_items_label_count")),
        sa.CheckConstraint("kind IN ('face', 'pair')", name=op.f("ck_items_kind")),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_items_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint("project_id", "key", name="uq_items_project_key"),
    )
    op.create_index("ix_items_queue", "items", ["project_id", "is_gold", "n_labels", "id"])
    op.create_table(
        "item_media",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("mime", sa.String(32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("role IN ('image', 'src', 'tgt')", name=op.f("ck_item_media_role")),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_item_media_item_id_items"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("item_id", "role", name=op.f("pk_item_media")),
    )
    for table in ("claims", "skips"):
        extra = (
            [
                sa.Column("claimed_at", sa.DateTime(), nullable=False),
                sa.Column("expires_at", sa.DateTime(), nullable=False),
            ]
            if table == "claims"
            else [sa.Column("created_at", sa.DateTime(), nullable=False)]
        )
        op.create_table(
            table,
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("item_id", sa.Integer(), nullable=False),
            sa.Column("annotator_id", sa.Integer(), nullable=False),
            *extra,
            sa.ForeignKeyConstraint(
                ["annotator_id"],
                ["users.id"],
                name=op.f(f"fk_{table}_annotator_id_users"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["item_id"], ["items.id"], name=op.f(f"fk_{table}_item_id_items"), ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
            sa.UniqueConstraint("item_id", "annotator_id", name=f"uq_{table}_item_annotator"),
        )
        op.create_index(op.f(f"ix_{table}_annotator_id"), table, ["annotator_id"])
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("expression", sa.String(16), nullable=False),
        sa.Column("intensity", sa.String(16), nullable=True),
        sa.Column("served_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.CheckConstraint(EXPRESSION_CK, name=op.f("ck_labels_expression")),
        sa.CheckConstraint(INTENSITY_CK, name=op.f("ck_labels_intensity")),
        sa.ForeignKeyConstraint(
            ["annotator_id"], ["users.id"], name=op.f("fk_labels_annotator_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_labels_item_id_items"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labels")),
        sa.UniqueConstraint("item_id", "annotator_id", name="uq_labels_item_annotator"),
    )
    op.create_index(op.f("ix_labels_annotator_id"), "labels", ["annotator_id"])


def downgrade() -> None:
    for table in ("labels", "skips", "claims", "item_media", "items", "web_sessions", "projects", "users"):
        op.drop_table(table)
