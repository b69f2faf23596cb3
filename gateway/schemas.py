"""Request and response bodies of the REST API (pydantic), named as the original Noti API named them."""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import ErrorDetails

from noti.apns.payload import InterruptionLevel, LiveActivityEvent, Priority, PushType, device_token_problem
from noti.bundle_id import BUNDLE_ID_MAX_LENGTH, BUNDLE_ID_PATTERN, bundle_id_problem
from noti.queue import Environment
from noti.store.models import NotificationStatus, Platform

BULK_MAX = 10_000


def _bundle_id(value: str) -> str:
    problem = bundle_id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


App = Annotated[
    str,
    Field(
        min_length=1,
        max_length=BUNDLE_ID_MAX_LENGTH,
        json_schema_extra={"pattern": BUNDLE_ID_PATTERN},
        description="Bundle id (apns-topic), com.example.app: letters, digits, hyphens and periods",
    ),
    AfterValidator(_bundle_id),
]
# PostgreSQL text cannot hold NUL: refuse it at the edge rather than fail in the store.
# Patterns given to pydantic are anchored (^...$): it searches them, it does not match them whole.
_NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, Field(pattern=_NO_NUL)]
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=_NO_NUL)]
ExternalId = Annotated[str, Field(min_length=1, max_length=255, pattern=_NO_NUL)]
Token = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$", description="Printable ASCII, no spaces")
]
# Sent to APNs as an HTTP/2 header (apns-collapse-id): visible ASCII, spaces only inside.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")


def _header_value(value: str) -> str:
    if _HEADER_VALUE.fullmatch(value) is None:
        raise ValueError("an APNs header value is visible ASCII (spaces only inside), at most 64 bytes")
    return value


HeaderValue = Annotated[
    str,
    Field(max_length=64, json_schema_extra={"pattern": f"^{_HEADER_VALUE.pattern}$"}, description="Visible ASCII"),
    AfterValidator(_header_value),
]


# Query times are kept a day inside the calendar's ends: rounding to hours, or an offset,
# must never leave it (Python's datetime stops at years 1 and 9999).
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def utc_moment(moment: datetime) -> datetime:
    """``moment`` in UTC (without an offset: taken as UTC); ValueError outside [EARLIEST, LATEST]."""
    try:
        utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise ValueError(f"must be between {EARLIEST.date()} and {LATEST.date()} (UTC)")
    return utc


Moment = Annotated[datetime, AfterValidator(utc_moment)]


def _with_offset(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# A stored time in an answer: SQLite gives them back without an offset, though all are UTC.
Timestamp = Annotated[datetime, AfterValidator(_with_offset)]


MAX_NESTING = 32  # levels of objects and arrays in data, content_state, attributes or a sound dict


def json_problem(value: Any, max_nesting: int = MAX_NESTING) -> str | None:
    """Why a JSON value from a client cannot be stored and sent, or None.

    Walked with a stack rather than recursion: the value is the client's, and so is its depth.
    """
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "text must not contain NUL (\\u0000) characters"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "NaN and Infinity are not JSON numbers"
        elif isinstance(item, dict | list):
            if depth == max_nesting:
                return f"objects and arrays may nest at most {max_nesting} levels deep"
            if isinstance(item, dict):
                if any("\x00" in key for key in item):
                    return "text must not contain NUL (\\u0000) characters"
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)
    return None


def _sendable_json(value: Any) -> Any:
    problem = json_problem(value)
    if problem is not None:
        raise ValueError(problem)
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


@dataclass(frozen=True, slots=True)
class Rejected:
    """A device of a bulk registration that failed validation: pydantic's errors, located within the device."""

    errors: list[ErrorDetails]


def _or_rejected(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # One invalid device must not fail the other 9,999: it is kept in its place as a Rejected
    # (pydantic does not check what a wrap validator returns).
    try:
        return handler(value)
    except ValidationError as exc:
        return Rejected(exc.errors(include_url=False, include_context=False, include_input=False))


class DeviceBulkIn(_Body):
    devices: list[Annotated[DeviceIn, WrapValidator(_or_rejected)]] = Field(
        min_length=1,
        max_length=BULK_MAX,
        description="Each registered or updated as by POST /api/devices/; an invalid one is reported, not stored",
    )

    def validated(self) -> list[DeviceIn | Rejected]:
        """Each device in order, or why it was refused."""
        return [*self.devices]


class DeviceBulkResult(BaseModel):
    index: int = Field(description="The device's position in the request's devices")
    id: int
    device_token: str
    app: str
    created: bool = Field(description="false when a device with this app and token was updated")


class DeviceBulkError(BaseModel):
    index: int = Field(description="The device's position in the request's devices")
    detail: str
    errors: list[ErrorItem]


class DeviceBulkOut(BaseModel):
    created: int
    updated: int
    failed: int = Field(description="Devices refused as invalid: see errors (nothing of them was stored)")
    results: list[DeviceBulkResult] = Field(description="The devices stored, in request order")
    errors: list[DeviceBulkError] = Field(description="The devices refused, in request order")


class DevicePatch(_Body):
    """The fields to change; a field left out keeps its value. Only ``owner`` may be null."""

    # Absent is None; an explicit null is refused (the columns hold no null), and the schema says so.
    platform: Platform | SkipJsonSchema[None] = None
    owner: ExternalId | None = Field(default=None, description="null detaches the device from its owner")
    tags: list[Tag] | SkipJsonSchema[None] = Field(default=None, json_schema_extra={"maxItems": 100})
    is_active: bool | SkipJsonSchema[None] = None

    @field_validator("platform", "tags", "is_active")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null: leave the field out to keep its value")
        if isinstance(value, list) and len(value) > 100:
            raise ValueError("a device has at most 100 tags")
        return value


class DeviceOut(BaseModel):
    id: int
    device_token: str
    app: str
    platform: Platform
    owner: str | None
    tags: list[str]
    is_active: bool
    last_notification_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


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
    priority: Priority | None = Field(default=None, description="Default 10, or 5 for background pushes")
    expiration: int | None = Field(default=None, ge=0, le=2**53, description="apns-expiration, epoch seconds")
    collapse_id: HeaderValue | None = Field(
        default=None, max_length=64, description="apns-collapse-id, at most 64 bytes"
    )
    interruption_level: InterruptionLevel | None = None
    mutable_content: bool | None = None
    # Live Activities (push_type liveactivity)
    event: LiveActivityEvent | None = None
    content_state: dict[str, Any] | None = None
    timestamp: int | None = Field(default=None, ge=0, le=2**53)
    dismissal_date: int | None = Field(default=None, ge=0, le=2**53)
    stale_date: int | None = Field(default=None, ge=0, le=2**53)
    attributes_type: Text | None = Field(default=None, max_length=255)
    attributes: dict[str, Any] | None = None
    input_push_token: bool | None = Field(default=None, description="start: the activity reports its update token")
    input_push_channel: Text | None = Field(
        default=None, max_length=255, description="start: the activity joins this broadcast channel"
    )

    _sendable = field_validator("data", "sound", "content_state", "attributes")(_sendable_json)

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


def _one_audience_schema(schema: dict[str, Any]) -> None:
    """Say in the schema what ``BulkIn`` checks: exactly one audience, a list (null is the same as leaving it out)."""
    for name in ("device_tokens", "owners"):
        field = schema["properties"][name]
        field.update(next(variant for variant in field.pop("anyOf") if variant.get("type") != "null"))
        field.pop("default", None)
    schema["oneOf"] = [{"required": ["device_tokens"]}, {"required": ["owners"]}]


class BulkIn(Content):
    # A client, or a fuzzer, reading the schema then sends a body with one audience, as the API wants.
    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_audience_schema)

    device_tokens: list[Token] | None = Field(default=None, min_length=1, max_length=BULK_MAX)
    owners: list[ExternalId] | None = Field(
        default=None,
        min_length=1,
        max_length=BULK_MAX,
        validation_alias=AliasChoices("owners", "owner_ids"),
        description="Every active device of each of these owners (a device's owner); owner_ids, the earlier name, "
        "is accepted too",
    )
    app: App | None = Field(default=None, description="Only devices of this app")
    environment: Environment | None = None

    @model_validator(mode="after")
    def _one_audience(self) -> BulkIn:
        if (self.device_tokens is None) == (self.owners is None):
            raise ValueError("give exactly one of device_tokens or owners")
        return self


class NotificationAccepted(BaseModel):
    id: uuid.UUID
    status: NotificationStatus
    credential: str | None = Field(
        default=None, description="namespace/name of the APNsCredential whose senders deliver it (see routing)"
    )


class BulkItem(BaseModel):
    id: uuid.UUID
    device_token: str
    credential: str | None = Field(
        default=None, description="namespace/name of the APNsCredential whose senders deliver it (see routing)"
    )


class BulkAccepted(BaseModel):
    count: int = Field(description="Notifications queued by this request")
    notifications: list[BulkItem]
    not_found: list[str] = Field(description="Tokens (or owners) with no registered device")
    inactive: list[str] = Field(description="Tokens of devices that are not active (not sent)")


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    device_id: int | None
    device_token: str
    app: str
    campaign: str | None
    credential: str | None = Field(
        default=None, description="namespace/name of the APNsCredential whose senders deliver it (see routing)"
    )
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
    event: str | None = Field(default=None, description="A Live Activity push: start, update or end")
    activity_id: str | None = Field(default=None, description="A Live Activity update or end: the activity")
    token_id: int | None = Field(
        default=None, description="Sent to a push-to-start, update or VoIP token (GET /api/devices/<token>/tokens/)"
    )
    channel_id: str | None = Field(
        default=None, description="A broadcast's channel (Apple's id); its device_token is then empty"
    )
    created_at: Timestamp
    queued_at: Timestamp | None
    sent_at: Timestamp | None


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
    since: Timestamp | None
    until: Timestamp | None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
