"""ORM classes of the store, mapped onto its tables (``noti.store.tables``): owners, devices, notifications, API keys.

The gateway, the admin UI and the operator read and write through these; the columns themselves
are defined once, in ``noti.store.tables``. Each class annotates its columns' Python types for
type checking (a test keeps them and the table's columns the same).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped, relationship

from noti.store import tables
from noti.store.tables import (
    FINAL_STATUSES,
    NAMING_CONVENTION,
    BigId,
    JsonType,
    NotificationStatus,
    Platform,
    TokenKind,
    utcnow,
)

__all__ = [
    "FINAL_STATUSES", "NAMING_CONVENTION", "ApiKey", "Base", "BigId", "BroadcastChannel", "CampaignCount", "Device",
    "DeviceOwner", "DeviceToken", "IdempotencyKey", "JsonType", "Notification", "NotificationCount",
    "NotificationStatus", "Platform", "TokenKind", "utcnow",
]  # fmt: skip


class Base(DeclarativeBase):
    metadata = tables.metadata


class DeviceOwner(Base):
    """A person or account that owns devices, known by the caller's own id."""

    __table__ = tables.device_owners

    id: Mapped[int]
    external_id: Mapped[str]
    email: Mapped[str | None]
    name: Mapped[str | None]
    is_active: Mapped[bool]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    devices: Mapped[list[Device]] = relationship(back_populates="owner")

    def __str__(self) -> str:
        return self.external_id


class Device(Base):
    """One app installation that can receive notifications, identified by (app, device_token)."""

    __table__ = tables.devices

    id: Mapped[int]
    app: Mapped[str]
    device_token: Mapped[str]
    platform: Mapped[Platform]
    owner_id: Mapped[int | None]
    tags: Mapped[list[str]]
    is_active: Mapped[bool]
    last_notification_at: Mapped[datetime | None]
    registered_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    owner: Mapped[DeviceOwner | None] = relationship(back_populates="devices")

    def __str__(self) -> str:
        return f"{self.app}/{self.device_token[:12]}…"


class Notification(Base):
    """The delivery record of one notification to one device."""

    __table__ = tables.notifications

    id: Mapped[uuid.UUID]
    device_id: Mapped[int | None]
    device_token: Mapped[str]
    app: Mapped[str]
    campaign: Mapped[str | None]
    credential: Mapped[str | None]

    title: Mapped[str | None]
    subtitle: Mapped[str | None]
    body: Mapped[str | None]
    badge: Mapped[int | None]
    sound: Mapped[Any | None]
    category: Mapped[str | None]
    thread_id: Mapped[str | None]
    data: Mapped[dict[str, Any] | None]
    push_type: Mapped[str]
    priority: Mapped[int]
    expiration: Mapped[int | None]
    collapse_id: Mapped[str | None]
    extra_content: Mapped[dict[str, Any] | None]

    status: Mapped[NotificationStatus]
    retry_count: Mapped[int]
    apns_id: Mapped[str | None]
    apns_unique_id: Mapped[str | None]
    token_id: Mapped[int | None]
    activity_id: Mapped[str | None]
    event: Mapped[str | None]
    apns_reason: Mapped[str | None]
    status_code: Mapped[int | None]
    idempotency_key: Mapped[str | None]
    channel_id: Mapped[str | None]
    created_at: Mapped[datetime]
    queued_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]

    def __str__(self) -> str:
        return str(self.id)


class DeviceToken(Base):
    """A token of a device other than its device token: one per (device, kind, slot).

    The slot is what makes a token one of several of its kind: the attributes type of a
    push-to-start token, the activity id of an update token, empty for the VoIP token.
    """

    __table__ = tables.device_tokens

    id: Mapped[int]
    device_id: Mapped[int]
    kind: Mapped[TokenKind]
    slot: Mapped[str]
    token: Mapped[str]
    attributes_type: Mapped[str | None]
    activity_id: Mapped[str | None]
    is_active: Mapped[bool]
    registered_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    device: Mapped[Device] = relationship()

    def __str__(self) -> str:
        return f"{self.kind.value}/{self.token[:12]}…"


class ApiKey(Base):
    """A gateway API key; only its hash and a lookup prefix are stored."""

    __table__ = tables.api_keys

    id: Mapped[int]
    name: Mapped[str]
    prefix: Mapped[str]
    key_hash: Mapped[str]
    scopes: Mapped[list[str]]
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` a send was made with, and a digest of that request.

    A retry with the same key must be the same request: one with another body gets a 422
    instead of the first request's answer (IETF draft-ietf-httpapi-idempotency-key-header).
    """

    __table__ = tables.idempotency_keys

    key: Mapped[str]
    fingerprint: Mapped[str]
    created_at: Mapped[datetime]


class CampaignCount(Base):
    """Records of a campaign that reached each final status, counted in the transaction that
    made them final: exactly once, whatever a crash or a redelivery does to the queue."""

    __table__ = tables.campaign_counts

    campaign: Mapped[str]
    status: Mapped[str]
    count: Mapped[int]


class NotificationCount(Base):
    """Hourly roll-up of notifications created and finished, so stats never scan the records.

    ``status`` is ``created`` for every record written, or the final status it reached; the
    counts of records still in flight are the created ones minus the final ones.
    """

    __table__ = tables.notification_counts

    bucket: Mapped[datetime]
    app: Mapped[str]
    status: Mapped[str]
    count: Mapped[int]


class BroadcastChannel(Base):
    """A broadcast channel APNs created for an app in one environment (migration 0011).

    ``channel_id`` is Apple's (``apns-channel-id``); ``source`` says who manages it: ``api`` for
    channels made over REST, ``<namespace>/<name>`` for a LiveActivityChannel resource.
    """

    __table__ = tables.broadcast_channels

    id: Mapped[int]
    app: Mapped[str]
    environment: Mapped[str]
    channel_id: Mapped[str]
    storage_policy: Mapped[int]
    name: Mapped[str | None]
    labels: Mapped[dict[str, str]]
    source: Mapped[str]
    created_at: Mapped[datetime]

    def __str__(self) -> str:
        return f"{self.app}/{self.environment}/{self.channel_id}"
