"""SQLAlchemy models of the store: owners, devices, notifications (delivery records), API keys, broadcast channels."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints keep Alembic migrations deterministic across PostgreSQL and SQLite.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact), plain JSON text elsewhere. None is SQL NULL, not
# JSON null: a record without data has none, however it was inserted (alone or in a batch).
JsonType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY, so BigInteger ids become INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


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


class DeviceOwner(Base):
    """A person or account that owns devices, known by the caller's own id."""

    __tablename__ = "device_owners"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    devices: Mapped[list[Device]] = relationship(back_populates="owner")

    def __str__(self) -> str:
        return self.external_id


class Device(Base):
    """One app installation that can receive notifications, identified by (app, device_token)."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("app", "device_token"),
        Index(None, "owner_id"),
        Index(None, "app", "is_active", "id"),
        Index(None, "device_token"),  # lookups by token alone (gateway), migration 0002
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    app: Mapped[str] = mapped_column(String(255))
    device_token: Mapped[str] = mapped_column(String(200))
    platform: Mapped[Platform] = mapped_column(_str_enum(Platform, "platform"), default=Platform.IOS)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("device_owners.id", ondelete="SET NULL"))
    tags: Mapped[list[str]] = mapped_column(JsonType, default=list)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_notification_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the app last registered this token (POST /api/devices/): a 410 older than this is stale (0006).
    registered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    owner: Mapped[DeviceOwner | None] = relationship(back_populates="devices")

    def __str__(self) -> str:
        return f"{self.app}/{self.device_token[:12]}…"


class Notification(Base):
    """The delivery record of one notification to one device."""

    __tablename__ = "notifications"
    # Every index here is paid for by each of the millions of records written an hour (a bulk
    # send of 10,000 spends more time in index upkeep than in the table): each one serves a
    # filter of the history API. Campaign and idempotency-key indexes are partial, so records
    # without one (most of them) skip them. On PostgreSQL the table is partitioned by day of
    # created_at and its primary key is (id, created_at) (migration 0009, noti.store.retention).
    # device_id is a plain column, not a foreign key:
    # records are history and outlive their device, and a key would check every insert and
    # need its own index for deletes (migration 0003).
    __table_args__ = (
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

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    device_id: Mapped[int | None] = mapped_column(BigId)  # the device when sent; it may be deleted since
    device_token: Mapped[str] = mapped_column(String(200))
    app: Mapped[str] = mapped_column(String(255))
    campaign: Mapped[str | None] = mapped_column(String(320))  # "namespace/name" of a NotificationCampaign
    credential: Mapped[str | None] = mapped_column(String(317))  # "namespace/name" of the APNsCredential queued for

    title: Mapped[str | None] = mapped_column(Text)
    subtitle: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    badge: Mapped[int | None] = mapped_column(Integer)
    sound: Mapped[Any | None] = mapped_column(JsonType)  # a sound name or Apple's critical-sound dict
    category: Mapped[str | None] = mapped_column(String(255))
    thread_id: Mapped[str | None] = mapped_column(String(255))
    data: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    push_type: Mapped[str] = mapped_column(String(20), default="alert")
    priority: Mapped[int] = mapped_column(SmallInteger, default=10)
    expiration: Mapped[int | None] = mapped_column(BigInteger)  # epoch seconds, as apns-expiration
    collapse_id: Mapped[str | None] = mapped_column(String(64))
    # Every other content field that is set (noti.store.content), NULL when none is (migration 0007).
    extra_content: Mapped[dict[str, Any] | None] = mapped_column(JsonType)

    status: Mapped[NotificationStatus] = mapped_column(
        _str_enum(NotificationStatus, "notification_status"), default=NotificationStatus.PENDING
    )
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    apns_id: Mapped[str | None] = mapped_column(String(36))
    apns_unique_id: Mapped[str | None] = mapped_column(String(36))  # apns-unique-id (sandbox), migration 0006
    # A record sent to a token of another kind than the device token (migration 0010): the
    # device_tokens row it went to, so a 410 retires that token and leaves the device alone.
    token_id: Mapped[int | None] = mapped_column(BigId)
    activity_id: Mapped[str | None] = mapped_column(String(255))  # the Live Activity an update or end is for
    event: Mapped[str | None] = mapped_column(String(10))  # a Live Activity's start, update or end
    apns_reason: Mapped[str | None] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    idempotency_key: Mapped[str | None] = mapped_column(String(300))
    # A broadcast's record: the Apple channel id it went to (device_token is then empty), migration 0011.
    channel_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def __str__(self) -> str:
        return str(self.id)


class TokenKind(enum.StrEnum):
    """The kinds of token a device holds besides its device token (which stays on ``devices``)."""

    PUSH_TO_START = "push_to_start"  # starts a Live Activity of one attributes type (ActivityKit)
    UPDATE = "update"  # updates and ends one running Live Activity
    VOIP = "voip"  # PushKit

    @property
    def push_type(self) -> str:
        """The apns-push-type a token of this kind is sent with."""
        return "voip" if self is TokenKind.VOIP else "liveactivity"


class DeviceToken(Base):
    """A token of a device other than its device token: one per (device, kind, slot).

    The slot is what makes a token one of several of its kind: the attributes type of a
    push-to-start token, the activity id of an update token, empty for the VoIP token.
    """

    __tablename__ = "device_tokens"
    __table_args__ = (
        UniqueConstraint("device_id", "kind", "slot"),
        Index(None, "token"),
        Index(None, "kind", "attributes_type", "is_active"),
        Index(None, "activity_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    kind: Mapped[TokenKind] = mapped_column(_str_enum(TokenKind, "token_kind"))
    slot: Mapped[str] = mapped_column(String(255), default="")
    token: Mapped[str] = mapped_column(String(200))
    attributes_type: Mapped[str | None] = mapped_column(String(255))
    activity_id: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # A 410 dated before this leaves the token active: the app registered it again since.
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # An update token's activity was sent its end (migration 0013): owner-wide updates skip it.
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    device: Mapped[Device] = relationship()

    def __str__(self) -> str:
        return f"{self.kind.value}/{self.token[:12]}…"


class ApiKey(Base):
    """A gateway API key; only its hash and a lookup prefix are stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[list[str]] = mapped_column(JsonType, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` a send was made with, and a digest of that request.

    A retry with the same key must be the same request: one with another body gets a 422
    instead of the first request's answer (IETF draft-ietf-httpapi-idempotency-key-header).
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index(None, "created_at"),)  # keys expire with their records (noti.store.retention)

    key: Mapped[str] = mapped_column(String(300), primary_key=True)  # "<API key prefix>:<header value>"
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the request, hex
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CampaignCount(Base):
    """Records of a campaign that reached each final status, counted in the transaction that
    made them final: exactly once, whatever a crash or a redelivery does to the queue."""

    __tablename__ = "campaign_counts"

    campaign: Mapped[str] = mapped_column(String(320), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class NotificationCount(Base):
    """Hourly roll-up of notifications created and finished, so stats never scan the records.

    ``status`` is ``created`` for every record written, or the final status it reached; the
    counts of records still in flight are the created ones minus the final ones.
    """

    __tablename__ = "notification_counts"

    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)  # hour start, UTC
    app: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class BroadcastChannel(Base):
    """A broadcast channel APNs created for an app in one environment (migration 0011).

    ``channel_id`` is Apple's (``apns-channel-id``); ``source`` says who manages it: ``api`` for
    channels made over REST, ``<namespace>/<name>`` for a LiveActivityChannel resource.
    """

    __tablename__ = "broadcast_channels"
    __table_args__ = (UniqueConstraint("app", "environment", "channel_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    app: Mapped[str] = mapped_column(String(255))
    environment: Mapped[str] = mapped_column(String(20))
    channel_id: Mapped[str] = mapped_column(String(200))
    storage_policy: Mapped[int] = mapped_column(SmallInteger)  # Apple's message-storage-policy: 0 or 1
    name: Mapped[str | None] = mapped_column(String(255))
    labels: Mapped[dict[str, str]] = mapped_column(JsonType, default=dict)
    source: Mapped[str] = mapped_column(String(320), default="api")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def __str__(self) -> str:
        return f"{self.app}/{self.environment}/{self.channel_id}"
