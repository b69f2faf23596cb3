"""Request and response bodies of the REST API (pydantic), named as the original Noti API named them."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from noti.apns.payload import device_token_problem
from noti.store.models import NotificationStatus, Platform

BULK_MAX = 10_000
_APP = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_]*")

Environment = Literal["sandbox", "production"]
PushType = Literal[
    "alert", "background", "voip", "liveactivity", "complication", "fileprovider", "mdm", "location",
    "pushtotalk", "widgets",
]  # fmt: skip
App = Annotated[
    str,
    Field(min_length=1, max_length=255, pattern=_APP.pattern, description="Bundle id (apns-topic), com.example.app"),
]
# PostgreSQL text cannot hold NUL: refuse it at the edge rather than fail in the store.
_NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, Field(pattern=_NO_NUL)]
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=_NO_NUL)]
ExternalId = Annotated[str, Field(min_length=1, max_length=255, pattern=_NO_NUL)]
Token = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$", description="Printable ASCII, no spaces")
]


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _no_nul(value: Any) -> Any:
    if _has_nul(value):
        raise ValueError("text must not contain NUL (\\u0000) characters")
    return value


def normalize_token(token: str) -> str:
    """APNs tokens are stored lower-case; anything else as given."""
    return token.lower() if device_token_problem(token) is None else token


def normalize_tokens(tokens: list[str]) -> list[str]:
    """``normalize_token`` of each; tokens already in lower case (the usual case) are checked at once."""
    joined = "".join(tokens)
    if joined == joined.lower():
        return tokens
    return [normalize_token(token) for token in tokens]


def _check_apns_token(token: str) -> str:
    problem = device_token_problem(token)
    if problem is not None:
        raise ValueError(problem)
    return token.lower()


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorItem(BaseModel):
    field: str = Field(description="Where the problem is, e.g. body.device_token or query.cursor")
    message: str


class Error(BaseModel):
    """Every error answer: a message, and for invalid input the fields at fault."""

    detail: str
    errors: list[ErrorItem] | None = None


# --- devices ---


class DeviceIn(_Body):
    device_token: Token
    app: App | None = Field(default=None, description="Defaults to NOTI_GATEWAY_DEFAULT_APP when set")
    platform: Platform = Platform.IOS
    owner: ExternalId | None = Field(default=None, description="The owner's external id; a new one creates the owner")
    tags: list[Tag] = Field(default_factory=list, max_length=100)
    is_active: bool = True

    @model_validator(mode="after")
    def _token_fits_platform(self) -> DeviceIn:
        if self.platform is Platform.IOS:
            self.device_token = _check_apns_token(self.device_token)
        return self


class DevicePatch(_Body):
    platform: Platform | None = None
    owner: ExternalId | None = Field(default=None, description="null detaches the device from its owner")
    tags: list[Tag] | None = Field(default=None, max_length=100)
    is_active: bool | None = None


class DeviceOut(BaseModel):
    id: int
    device_token: str
    app: str
    platform: Platform
    owner: str | None
    tags: list[str]
    is_active: bool
    last_notification_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DevicePage(BaseModel):
    results: list[DeviceOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")
    next: str | None = Field(description="The next page's URL")


# --- notifications ---


class Content(_Body):
    """What the notification says and how APNs should treat it."""

    title: Text | None = Field(default=None, max_length=4096)
    subtitle: Text | None = Field(default=None, max_length=4096)
    body: Text | None = Field(default=None, max_length=4096)
    title_loc_key: Text | None = Field(default=None, max_length=255)
    title_loc_args: list[Text] | None = Field(default=None, max_length=50)
    subtitle_loc_key: Text | None = Field(default=None, max_length=255)
    subtitle_loc_args: list[Text] | None = Field(default=None, max_length=50)
    loc_key: Text | None = Field(default=None, max_length=255)
    loc_args: list[Text] | None = Field(default=None, max_length=50)
    launch_image: Text | None = Field(default=None, max_length=255)
    badge: int | None = Field(default=None, ge=0, le=2_147_483_647)
    sound: Text | dict[str, Any] | None = Field(default=None, description="A sound name or a critical-sound dict")
    category: Text | None = Field(default=None, max_length=255)
    thread_id: Text | None = Field(default=None, max_length=255)
    data: dict[str, Any] | None = Field(default=None, description="Custom keys, merged into the payload beside aps")
    content_available: bool | None = Field(default=None, description="Wake the app (background work)")
    relevance_score: float | None = Field(default=None, ge=0, le=1)
    target_content_id: Text | None = Field(default=None, max_length=255)
    filter_criteria: Text | None = Field(default=None, max_length=255)
    push_type: PushType = "alert"
    priority: Literal[10, 5, 1] | None = Field(default=None, description="Default 10, or 5 for background pushes")
    expiration: int | None = Field(default=None, ge=0, le=2**53, description="apns-expiration, epoch seconds")
    collapse_id: Text | None = Field(default=None, max_length=64, description="apns-collapse-id, at most 64 bytes")
    interruption_level: Literal["passive", "active", "time-sensitive", "critical"] | None = None
    mutable_content: bool | None = None
    # Live Activities (push_type liveactivity)
    event: Literal["start", "update", "end"] | None = None
    content_state: dict[str, Any] | None = None
    timestamp: int | None = Field(default=None, ge=0, le=2**53)
    dismissal_date: int | None = Field(default=None, ge=0, le=2**53)
    stale_date: int | None = Field(default=None, ge=0, le=2**53)
    attributes_type: Text | None = Field(default=None, max_length=255)
    attributes: dict[str, Any] | None = None

    _data_no_nul = field_validator("data", "sound", "content_state", "attributes")(_no_nul)

    @field_validator("collapse_id")
    @classmethod
    def _collapse_id_bytes(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) > 64:
            raise ValueError("apns-collapse-id is at most 64 bytes")
        return value

    def content_fields(self) -> dict[str, Any]:
        return self.model_dump(include=set(Content.model_fields), exclude_none=True)


class NotificationIn(Content):
    device_token: Token = Field(json_schema_extra={"pattern": "^(?:[0-9a-fA-F]{2}){32,100}$"})
    app: App | None = Field(default=None, description="Needed when the token is not a registered device")
    environment: Environment | None = Field(default=None, description="Defaults to NOTI_APNS_ENVIRONMENT")

    @field_validator("device_token")
    @classmethod
    def _token(cls, value: str) -> str:
        return _check_apns_token(value)


class BulkIn(Content):
    device_tokens: list[Token] | None = Field(default=None, min_length=1, max_length=BULK_MAX)
    owner_ids: list[ExternalId] | None = Field(
        default=None, min_length=1, max_length=BULK_MAX, description="External ids: every active device of each"
    )
    app: App | None = Field(default=None, description="Only devices of this app")
    environment: Environment | None = None

    @model_validator(mode="after")
    def _one_audience(self) -> BulkIn:
        if (self.device_tokens is None) == (self.owner_ids is None):
            raise ValueError("give exactly one of device_tokens or owner_ids")
        return self


class NotificationAccepted(BaseModel):
    id: uuid.UUID
    status: NotificationStatus


class BulkItem(BaseModel):
    id: uuid.UUID
    device_token: str


class BulkAccepted(BaseModel):
    count: int = Field(description="Notifications queued by this request")
    notifications: list[BulkItem]
    not_found: list[str] = Field(description="Tokens (or owner ids) with no registered device")
    inactive: list[str] = Field(description="Tokens of devices that are not active (not sent)")


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    device_id: int | None
    device_token: str
    app: str
    campaign: str | None
    title: str | None
    subtitle: str | None
    body: str | None
    badge: int | None
    sound: str | dict[str, Any] | None
    category: str | None
    thread_id: str | None
    data: dict[str, Any] | None
    push_type: str
    priority: int
    expiration: int | None
    collapse_id: str | None
    status: NotificationStatus
    retry_count: int
    apns_id: str | None
    apns_unique_id: str | None = Field(
        default=None, description="apns-unique-id (sandbox only): the id Apple's Push Notifications Console looks up"
    )
    apns_reason: str | None
    status_code: int | None
    created_at: datetime
    queued_at: datetime | None
    sent_at: datetime | None


class NotificationPage(BaseModel):
    results: list[NotificationOut]
    next_cursor: str | None
    next: str | None


class Counts(BaseModel):
    total: int = Field(description="Notifications created")
    sent: int
    failed: int
    invalid_token: int
    in_flight: int = Field(description="Created and not final yet (pending, queued or sending)")
    success_rate: float | None = Field(description="sent / finished; null before anything finished")
    invalid_token_rate: float | None = Field(description="invalid_token / finished")


class Stats(BaseModel):
    overall: Counts
    window: Counts | None = Field(description="The same for notifications created in [since, until)")
    since: datetime | None
    until: datetime | None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
