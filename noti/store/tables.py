"""The store's tables as SQLAlchemy Core ``Table``s: owners, devices, notifications (delivery records), API keys.

The one definition of every column, constraint and index. ``noti.store.models`` maps its ORM
classes onto these tables; the write paths (sender, fan-out, bulk sends) use them directly, so a
sender never imports the ORM (about 8 MB of its resident memory, issue #17).
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

# Named constraints keep Alembic migrations deterministic across PostgreSQL and SQLite.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# JSONB on PostgreSQL (indexable, compact), plain JSON text elsewhere. None is SQL NULL, not
# JSON null: a record without data has none, however it was inserted (alone or in a batch).
JsonType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY, so BigInteger ids become INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Platform(enum.StrEnum):
    IOS = "ios"
    ANDROID = "android"


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    INVALID_TOKEN = "invalid_token"

    @property
    def is_final(self) -> bool:
        """Whether no further delivery attempt will change this record."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({NotificationStatus.SENT, NotificationStatus.FAILED, NotificationStatus.INVALID_TOKEN})


class TokenKind(enum.StrEnum):
    """The kinds of token a device holds besides its device token (which stays on ``devices``)."""

    PUSH_TO_START = "push_to_start"  # starts a Live Activity of one attributes type (ActivityKit)
    UPDATE = "update"  # updates and ends one running Live Activity
    VOIP = "voip"  # PushKit

    @property
    def push_type(self) -> str:
        """The apns-push-type a token of this kind is sent with."""
        return "voip" if self is TokenKind.VOIP else "liveactivity"


def _str_enum(enum_cls: type[enum.StrEnum], name: str) -> Enum:
    # Stored as VARCHAR + CHECK with the enum *values*, so adding a value is a plain migration.
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=20,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


def _moment(name: str, *, default: bool = False, onupdate: bool = False, nullable: bool = True) -> Column[datetime]:
    """A timezone-aware timestamp column, defaulting to (and updated with) the current time where asked."""
    return Column(
        name, DateTime(timezone=True), default=utcnow if default else None, onupdate=utcnow if onupdate else None,
        nullable=nullable,
    )  # fmt: skip


# A person or account that owns devices, known by the caller's own id.
device_owners = Table(
    "device_owners",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("external_id", String(255), unique=True, nullable=False),
    Column("email", String(320)),
    Column("name", String(255)),
    Column("is_active", Boolean, default=True, nullable=False),
    _moment("created_at", default=True, nullable=False),
    _moment("updated_at", default=True, onupdate=True, nullable=False),
)

# One app installation that can receive notifications, identified by (app, device_token).
devices = Table(
    "devices",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("app", String(255), nullable=False),
    Column("device_token", String(200), nullable=False),
    Column("platform", _str_enum(Platform, "platform"), default=Platform.IOS, nullable=False),
    Column("owner_id", ForeignKey("device_owners.id", ondelete="SET NULL")),
    Column("tags", JsonType, default=list, nullable=False),
    Column("is_active", Boolean, default=True, nullable=False),
    _moment("last_notification_at"),
    # When the app last registered this token (POST /api/devices/): a 410 older than this is stale (0006).
    _moment("registered_at", default=True),
    _moment("created_at", default=True, nullable=False),
    _moment("updated_at", default=True, onupdate=True, nullable=False),
    UniqueConstraint("app", "device_token"),
    Index(None, "owner_id"),
    Index(None, "app", "is_active", "id"),
    Index(None, "device_token"),  # lookups by token alone (gateway), migration 0002
)

# The delivery record of one notification to one device.
# Every index here is paid for by each of the millions of records written an hour (a bulk
# send of 10,000 spends more time in index upkeep than in the table): each one serves a
# filter of the history API. Campaign and idempotency-key indexes are partial, so records
# without one (most of them) skip them. On PostgreSQL the table is partitioned by day of
# created_at and its primary key is (id, created_at) (migration 0009, noti.store.retention).
# device_id is a plain column, not a foreign key:
# records are history and outlive their device, and a key would check every insert and
# need its own index for deletes (migration 0003).
notifications = Table(
    "notifications",
    metadata,
    Column("id", Uuid, primary_key=True, default=uuid.uuid4),
    Column("device_id", BigId),  # the device when sent; it may be deleted since
    Column("device_token", String(200), nullable=False),
    Column("app", String(255), nullable=False),
    Column("campaign", String(320)),  # "namespace/name" of a NotificationCampaign
    Column("credential", String(317)),  # "namespace/name" of the APNsCredential queued for
    Column("title", Text),
    Column("subtitle", Text),
    Column("body", Text),
    Column("badge", Integer),
    Column("sound", JsonType),  # a sound name or Apple's critical-sound dict
    Column("category", String(255)),
    Column("thread_id", String(255)),
    Column("data", JsonType),
    Column("push_type", String(20), default="alert", nullable=False),
    Column("priority", SmallInteger, default=10, nullable=False),
    Column("expiration", BigInteger),  # epoch seconds, as apns-expiration
    Column("collapse_id", String(64)),
    # Every other content field that is set (noti.store.content), NULL when none is (migration 0007).
    Column("extra_content", JsonType),
    Column(
        "status",
        _str_enum(NotificationStatus, "notification_status"),
        default=NotificationStatus.PENDING,
        nullable=False,
    ),
    Column("retry_count", Integer, default=0, nullable=False),
    Column("apns_id", String(36)),
    Column("apns_unique_id", String(36)),  # apns-unique-id (sandbox), migration 0006
    # A record sent to a token of another kind than the device token (migration 0010): the
    # device_tokens row it went to, so a 410 retires that token and leaves the device alone.
    Column("token_id", BigId),
    Column("activity_id", String(255)),  # the Live Activity an update or end is for
    Column("event", String(10)),  # a Live Activity's start, update or end
    Column("apns_reason", String(64)),
    Column("status_code", SmallInteger),
    Column("idempotency_key", String(300)),
    # A broadcast's record: the Apple channel id it went to (device_token is then empty), migration 0011.
    Column("channel_id", String(200)),
    _moment("created_at", default=True, nullable=False),
    _moment("queued_at"),
    _moment("sent_at"),
    Index(None, "created_at"),
    Index(None, "status", "created_at"),
    Index(None, "device_token", "created_at"),
    Index(
        "ix_notifications_campaign_created_at",
        "campaign",
        "created_at",
        postgresql_where=text("campaign IS NOT NULL"),
        sqlite_where=text("campaign IS NOT NULL"),
    ),
    # Not unique: a partitioned table's unique index must include created_at (migration 0009); the
    # idempotency_keys table's primary key decides which request owns a key.
    Index(
        "ix_notifications_idempotency_key",
        "idempotency_key",
        postgresql_where=text("idempotency_key IS NOT NULL"),
        sqlite_where=text("idempotency_key IS NOT NULL"),
    ),
)

# A token of a device other than its device token: one per (device, kind, slot). The slot is what
# makes a token one of several of its kind: the attributes type of a push-to-start token, the
# activity id of an update token, empty for the VoIP token.
device_tokens = Table(
    "device_tokens",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("device_id", ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("kind", _str_enum(TokenKind, "token_kind"), nullable=False),
    Column("slot", String(255), default="", nullable=False),
    Column("token", String(200), nullable=False),
    Column("attributes_type", String(255)),
    Column("activity_id", String(255)),
    Column("is_active", Boolean, default=True, nullable=False),
    # A 410 dated before this leaves the token active: the app registered it again since.
    _moment("registered_at", default=True, nullable=False),
    _moment("retired_at"),
    # An update token's activity was sent its end (migration 0013): owner-wide updates skip it.
    _moment("ended_at"),
    _moment("created_at", default=True, nullable=False),
    _moment("updated_at", default=True, onupdate=True, nullable=False),
    UniqueConstraint("device_id", "kind", "slot"),
    Index(None, "token"),
    Index(None, "kind", "attributes_type", "is_active"),
    Index(None, "activity_id"),
)

# A gateway API key; only its hash and a lookup prefix are stored.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("prefix", String(32), unique=True, nullable=False),
    Column("key_hash", String(128), nullable=False),
    Column("scopes", JsonType, default=list, nullable=False),
    _moment("created_at", default=True, nullable=False),
    _moment("last_used_at"),
    _moment("revoked_at"),
)

# An Idempotency-Key a send was made with, and a digest of that request. A retry with the same key
# must be the same request: one with another body gets a 422 instead of the first request's answer
# (IETF draft-ietf-httpapi-idempotency-key-header).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(300), primary_key=True),  # "<API key prefix>:<header value>"
    Column("fingerprint", String(64), nullable=False),  # SHA-256 of the request, hex
    _moment("created_at", default=True, nullable=False),
    Index(None, "created_at"),  # keys expire with their records (noti.store.retention)
)

# Records of a campaign that reached each final status, counted in the transaction that made them
# final: exactly once, whatever a crash or a redelivery does to the queue.
campaign_counts = Table(
    "campaign_counts",
    metadata,
    Column("campaign", String(320), primary_key=True),
    Column("status", String(20), primary_key=True),
    Column("count", BigInteger, default=0, nullable=False),
)

# Hourly roll-up of notifications created and finished, so stats never scan the records. ``status``
# is ``created`` for every record written, or the final status it reached; the counts of records
# still in flight are the created ones minus the final ones.
notification_counts = Table(
    "notification_counts",
    metadata,
    Column("bucket", DateTime(timezone=True), primary_key=True),  # hour start, UTC
    Column("app", String(255), primary_key=True),
    Column("status", String(20), primary_key=True),
    Column("count", BigInteger, default=0, nullable=False),
)

# A broadcast channel APNs created for an app in one environment (migration 0011). ``channel_id`` is
# Apple's (``apns-channel-id``); ``source`` says who manages it: ``api`` for channels made over REST,
# ``<namespace>/<name>`` for a LiveActivityChannel resource.
broadcast_channels = Table(
    "broadcast_channels",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("app", String(255), nullable=False),
    Column("environment", String(20), nullable=False),
    Column("channel_id", String(200), nullable=False),
    Column("storage_policy", SmallInteger, nullable=False),  # Apple's message-storage-policy: 0 or 1
    Column("name", String(255)),
    Column("labels", JsonType, default=dict, nullable=False),
    Column("source", String(320), default="api", nullable=False),
    _moment("created_at", default=True, nullable=False),
    UniqueConstraint("app", "environment", "channel_id"),
)
