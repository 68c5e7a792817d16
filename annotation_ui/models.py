"""Database schema (SQLAlchemy 2 ORM). Migrations in annotation_ui/migrations must match it (tested)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
GOLD_MAX_LABELS = 2**31 - 1  # gold items are labelled once by every annotator, not capped


def utcnow() -> datetime:
    """Naive UTC (stored as such on SQLite and PostgreSQL alike)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('admin', 'annotator')", name="role"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WebSession(Base):
    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint("raters_per_item >= 1", name="raters"),
        CheckConstraint("quorum >= 1 AND quorum <= raters_per_item", name="quorum"),
        CheckConstraint("lease_seconds >= 1", name="lease"),
        CheckConstraint("gold_every >= 0", name="gold_every"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    raters_per_item: Mapped[int] = mapped_column(Integer, default=5)
    quorum: Mapped[int] = mapped_column(Integer, default=3)
    lease_seconds: Mapped[int] = mapped_column(Integer, default=600)
    gold_every: Mapped[int] = mapped_column(Integer, default=10)
    guidelines: Mapped[str] = mapped_column(Text, default="")
    # A pair's edit instruction can bias an expression label: hidden on the labelling page unless set.
    show_instruction: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ProjectMember(Base):
    """Annotators see and get items of the projects they are members of only (admins: every project)."""

    __tablename__ = "project_members"
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("project_id", "key", name="uq_items_project_key"),
        # The guarded count: an item never holds more labels than it may (enforced by the database).
        CheckConstraint("n_labels >= 0 AND n_labels <= max_labels", name="label_count"),
        CheckConstraint("kind IN ('face', 'pair')", name="kind"),
        Index("ix_items_queue", "project_id", "is_gold", "n_labels", "id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(8), default="face")
    instruction: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[str | None] = mapped_column(Text, nullable=True)  # the sample's json, verbatim
    source: Mapped[str | None] = mapped_column(Text, nullable=True)  # shard or folder it came from
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_expression: Mapped[str | None] = mapped_column(String(16), nullable=True)
    gold_intensity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    max_labels: Mapped[int] = mapped_column(Integer)
    n_labels: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ItemMedia(Base):
    """Image bytes live in the database, so items are served by id only and a team needs no shared disk."""

    __tablename__ = "item_media"
    __table_args__ = (CheckConstraint("role IN ('image', 'src', 'tgt')", name="role"),)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(8), primary_key=True)
    mime: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Claim(Base):
    """A lease on one item for one annotator; it holds one of the item's label slots until it expires."""

    __tablename__ = "claims"
    __table_args__ = (UniqueConstraint("item_id", "annotator_id", name="uq_claims_item_annotator"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    claimed_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (
        # No annotator labels an item twice (enforced by the database).
        UniqueConstraint("item_id", "annotator_id", name="uq_labels_item_annotator"),
        CheckConstraint(
            "expression IN ('neutral', 'happy', 'sad', 'surprised', 'fearful', 'disgusted', 'angry')",
            name="expression",
        ),
        CheckConstraint(
            "(expression = 'neutral' AND intensity IS NULL) OR "
            "(expression <> 'neutral' AND intensity IN ('slightly', 'normally', 'strongly'))",
            name="intensity",
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expression: Mapped[str] = mapped_column(String(16))
    intensity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    served_at: Mapped[datetime] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)


class Skip(Base):
    __tablename__ = "skips"
    __table_args__ = (UniqueConstraint("item_id", "annotator_id", name="uq_skips_item_annotator"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class LoginThrottle(Base):
    """Failed logins per account (case-folded name) and per client address; shared by every worker."""

    __tablename__ = "login_throttle"
    __table_args__ = (
        UniqueConstraint("scope", "key", name="uq_login_throttle_scope_key"),
        CheckConstraint("scope IN ('account', 'address')", name="scope"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))
    key: Mapped[str] = mapped_column(String(255))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    first_failure_at: Mapped[datetime] = mapped_column(DateTime)
    last_failure_at: Mapped[datetime] = mapped_column(DateTime)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
