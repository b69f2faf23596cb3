"""What a notification says, and the APNs payload and headers built from it (pure functions)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

import orjson

# Each list once, as the type the API's schema is built from; the CRDs are held to them by tests.
PushType = Literal[
    "alert", "background", "voip", "liveactivity", "complication", "fileprovider", "mdm", "location",
    "pushtotalk", "widgets", "controls",
]  # fmt: skip
InterruptionLevel = Literal["passive", "active", "time-sensitive", "critical"]
LiveActivityEvent = Literal["start", "update", "end"]
Priority = Literal[10, 5, 1]  # apns-priority: immediate, power-considerate, low
PUSH_TYPES: frozenset[str] = frozenset(get_args(PushType))
# apns-topic is the bundle id plus a suffix for some push types.
TOPIC_SUFFIXES = {
    "voip": ".voip",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity",
    "location": ".location-query",
    "pushtotalk": ".voip-ptt",
    "widgets": ".push-type.widgets",
    "controls": ".push-type.controls",
}
# WidgetKit and control reloads carry only this: "aps": {"content-changed": true}.
RELOAD_PUSH_TYPES = frozenset({"widgets", "controls"})
INTERRUPTION_LEVELS: frozenset[str] = frozenset(get_args(InterruptionLevel))
LIVE_ACTIVITY_EVENTS: frozenset[str] = frozenset(get_args(LiveActivityEvent))
PRIORITIES: frozenset[int] = frozenset(get_args(Priority))
MAX_PAYLOAD = 4096
MAX_VOIP_PAYLOAD = 5120
MAX_COLLAPSE_ID = 64
_HEX_TOKEN = re.compile(r"^(?:[0-9a-fA-F]{2}){32,}$")


class InvalidNotification(ValueError):
    """A notification APNs would refuse; the message names the field and what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class PayloadTooLarge(InvalidNotification):
    """The JSON payload exceeds Apple's limit for its push type."""

    def __init__(self, size: int, limit: int, push_type: str) -> None:
        super().__init__(
            "payload", f"payload is {size} bytes; APNs allows at most {limit} for {push_type} notifications"
        )
        self.size = size
        self.limit = limit


def device_token_problem(token: object) -> str | None:
    """Why ``token`` is not an APNs device token, or None when it is one."""
    if not isinstance(token, str) or not token:
        return "an APNs device token is a non-empty string of hex digits"
    if len(token) < 64:
        return f"an APNs device token has at least 64 hex digits; this one has {len(token)} characters"
    if len(token) % 2:
        return "an APNs device token has an even number of hex digits"
    if not _HEX_TOKEN.match(token):
        return "an APNs device token has only hex digits (0-9, a-f)"
    return None


def validate_device_token(token: object) -> str:
    """The token, lower-cased; raises InvalidNotification saying why it is not an APNs token."""
    problem = device_token_problem(token)
    if problem:
        raise InvalidNotification("device_token", problem)
    assert isinstance(token, str)
    return token.lower()


@dataclass(frozen=True, slots=True)
class NotificationContent:
    """Everything a notification says; field names are the ones the store and the API use."""

    title: str | None = None
    subtitle: str | None = None
    body: str | None = None
    title_loc_key: str | None = None
    title_loc_args: list[str] | None = None
    subtitle_loc_key: str | None = None
    subtitle_loc_args: list[str] | None = None
    loc_key: str | None = None
    loc_args: list[str] | None = None
    launch_image: str | None = None
    badge: int | None = None
    sound: str | dict[str, Any] | None = None  # a file name, or {"critical": 1, "name": ..., "volume": 0..1}
    category: str | None = None
    thread_id: str | None = None
    content_available: bool | None = None
    mutable_content: bool | None = None
    interruption_level: str | None = None
    relevance_score: float | None = None
    target_content_id: str | None = None
    filter_criteria: str | None = None
    data: dict[str, Any] | None = None  # custom keys at the top level of the payload
    push_type: str = "alert"
    priority: int | None = None  # 10, 5 or 1; default 10 for alerts, 5 for background
    expiration: int | None = None  # epoch seconds; 0 means deliver once or never
    collapse_id: str | None = None
    # Live Activities
    event: str | None = None
    content_state: dict[str, Any] | None = None
    timestamp: int | None = None
    dismissal_date: int | None = None
    stale_date: int | None = None
    attributes_type: str | None = None
    attributes: dict[str, Any] | None = None
    input_push_token: bool | None = None  # start: the new activity reports its update token
    input_push_channel: str | None = None  # start: the new activity joins this broadcast channel

    def __post_init__(self) -> None:
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as plain JSON-able values (the queue message's ``content``)."""
        return {key: value for key, value in asdict(self).items() if value is not None and key != "push_type"} | {
            "push_type": self.push_type
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NotificationContent:
        """Build from a plain dict; unknown keys and wrong types raise InvalidNotification."""
        if not isinstance(values, dict):
            raise InvalidNotification("content", "must be an object")
        unknown = sorted(set(values) - _FIELD_NAMES)
        if unknown:
            raise InvalidNotification(unknown[0], "is not a notification field")
        try:
            return cls(**{key: value for key, value in values.items() if value is not None})
        except TypeError as exc:
            raise InvalidNotification("content", str(exc)) from None

    @property
    def effective_priority(self) -> int:
        if self.priority is not None:
            return self.priority
        return _default_priority(self.push_type, self.has_alert)

    @property
    def has_alert(self) -> bool:
        return any(getattr(self, name) is not None for name in _ALERT_FIELDS)

    @property
    def max_payload(self) -> int:
        return MAX_VOIP_PAYLOAD if self.push_type == "voip" else MAX_PAYLOAD


_FIELD_NAMES = frozenset(f.name for f in fields(NotificationContent))
# field → key inside aps.alert
_ALERT_FIELDS = {
    "title": "title",
    "subtitle": "subtitle",
    "body": "body",
    "title_loc_key": "title-loc-key",
    "title_loc_args": "title-loc-args",
    "subtitle_loc_key": "subtitle-loc-key",
    "subtitle_loc_args": "subtitle-loc-args",
    "loc_key": "loc-key",
    "loc_args": "loc-args",
    "launch_image": "launch-image",
}
# field → key inside aps
_APS_FIELDS = {
    "badge": "badge",
    "sound": "sound",
    "category": "category",
    "thread_id": "thread-id",
    "interruption_level": "interruption-level",
    "relevance_score": "relevance-score",
    "target_content_id": "target-content-id",
    "filter_criteria": "filter-criteria",
    "event": "event",
    "content_state": "content-state",
    "timestamp": "timestamp",
    "dismissal_date": "dismissal-date",
    "stale_date": "stale-date",
    "attributes_type": "attributes-type",
    "attributes": "attributes",
    "input_push_channel": "input-push-channel",
}
_TYPES: dict[str, tuple[type, ...]] = {
    **{name: (str,) for name in ("title", "subtitle", "body", "title_loc_key", "subtitle_loc_key", "loc_key")},
    **{name: (list,) for name in ("title_loc_args", "subtitle_loc_args", "loc_args")},
    "launch_image": (str,),
    "badge": (int,),
    "sound": (str, dict),
    "category": (str,),
    "thread_id": (str,),
    "content_available": (bool,),
    "mutable_content": (bool,),
    "interruption_level": (str,),
    "relevance_score": (int, float),
    "target_content_id": (str,),
    "filter_criteria": (str,),
    "data": (dict,),
    "push_type": (str,),
    "priority": (int,),
    "expiration": (int,),
    "collapse_id": (str,),
    "event": (str,),
    "content_state": (dict,),
    "timestamp": (int,),
    "dismissal_date": (int,),
    "stale_date": (int,),
    "attributes_type": (str,),
    "attributes": (dict,),
    "input_push_token": (bool,),
    "input_push_channel": (str,),
}


def _default_priority(push_type: str, has_alert: bool) -> int:
    return 5 if push_type in {"background", "liveactivity"} and not has_alert else 10


def default_priority(push_type: str, values: Mapping[str, Any]) -> int:
    """The apns-priority of a content (``to_dict()`` form) that gives none: 5 for a background or
    Live Activity push without an alert, else 10."""
    return _default_priority(push_type, any(values.get(name) is not None for name in _ALERT_FIELDS))


def _check(content: NotificationContent) -> None:
    for name, allowed in _TYPES.items():
        value = getattr(content, name)
        if value is None:
            continue
        if isinstance(value, bool) and bool not in allowed:
            raise InvalidNotification(name, f"must be {' or '.join(t.__name__ for t in allowed)}, not a boolean")
        if not isinstance(value, allowed):
            raise InvalidNotification(name, f"must be {' or '.join(t.__name__ for t in allowed)}")
    if content.push_type not in PUSH_TYPES:
        raise InvalidNotification("push_type", f"must be one of {', '.join(sorted(PUSH_TYPES))}")
    if content.priority is not None and content.priority not in PRIORITIES:
        raise InvalidNotification("priority", "must be 10 (immediate), 5 (power-considerate) or 1 (low)")
    if content.badge is not None and content.badge < 0:
        raise InvalidNotification("badge", "must be 0 or more")
    if content.expiration is not None and content.expiration < 0:
        raise InvalidNotification("expiration", "must be epoch seconds (0 or more)")
    if content.collapse_id is not None and len(content.collapse_id.encode()) > MAX_COLLAPSE_ID:
        raise InvalidNotification("collapse_id", f"must be at most {MAX_COLLAPSE_ID} bytes")
    if content.interruption_level is not None and content.interruption_level not in INTERRUPTION_LEVELS:
        raise InvalidNotification("interruption_level", f"must be one of {', '.join(sorted(INTERRUPTION_LEVELS))}")
    if content.relevance_score is not None and not 0 <= content.relevance_score <= 1:
        raise InvalidNotification("relevance_score", "must be between 0 and 1")
    if content.event is not None and content.event not in LIVE_ACTIVITY_EVENTS:
        raise InvalidNotification("event", "must be start, update or end")
    if isinstance(content.sound, dict):
        unknown = set(content.sound) - {"critical", "name", "volume"}
        if unknown or "name" not in content.sound:
            raise InvalidNotification("sound", "a critical sound is {critical: 1, name: <file>, volume: 0..1}")
    if content.data is not None and "aps" in content.data:
        raise InvalidNotification("data", "custom data must not use the reserved key 'aps'")
    if content.push_type == "background" and content.has_alert:
        raise InvalidNotification("push_type", "a background notification carries no alert; use push_type alert")
    if content.push_type == "background" and content.priority == 10:
        raise InvalidNotification("priority", "a background notification uses priority 5 (APNs refuses 10)")
    problem = live_activity_problem(content)
    if problem is not None:
        raise InvalidNotification(*problem)


_START_ONLY = ("attributes_type", "attributes", "input_push_token", "input_push_channel")


def live_activity_problem(content: NotificationContent) -> tuple[str, str] | None:
    """(field, why) when a Live Activity push lacks what ActivityKit needs for its event, or None.

    As "Starting and updating Live Activities with ActivityKit push notifications" has it:
    every event carries a timestamp; a start names the attributes type, its attributes, the
    content state and an alert; an update carries the content state; start-only keys stay
    on starts, and a new activity takes updates by token or by channel, not both.
    """
    if content.push_type != "liveactivity":
        return None
    if content.priority == 1:
        return "priority", "a Live Activity push is 10 (at once, on the device's budget) or 5 (no budget)"
    if content.event is None:
        return "event", "a Live Activity push says start, update or end"
    if content.timestamp is None:
        return "timestamp", "a Live Activity push carries the epoch seconds its content was made at"
    if content.event == "start":
        for name in ("attributes_type", "attributes", "content_state"):
            if getattr(content, name) is None:
                return name, "a Live Activity start needs attributes_type, attributes and content_state"
        if not content.has_alert:
            return "title", "a Live Activity start needs an alert (title and body)"
        if content.input_push_token is False:
            return "input_push_token", "give true, or leave it out"
        if content.input_push_token and content.input_push_channel is not None:
            return "input_push_channel", "a Live Activity takes updates by token or by channel, not both"
        if content.dismissal_date is not None:
            return "dismissal_date", "a dismissal date ends an activity: give it with event end"
        return None
    for name in _START_ONLY:
        if getattr(content, name) is not None:
            return name, f"is for starting a Live Activity, not for event {content.event}"
    if content.event == "update" and content.content_state is None:
        return "content_state", "a Live Activity update carries the new content state"
    return None


def payload_dict(content: NotificationContent) -> dict[str, Any]:
    """The JSON document APNs receives."""
    aps: dict[str, Any] = {}
    alert = {key: getattr(content, name) for name, key in _ALERT_FIELDS.items() if getattr(content, name) is not None}
    if alert:
        aps["alert"] = alert
    for name, key in _APS_FIELDS.items():
        value = getattr(content, name)
        if value is not None:
            aps[key] = value
    if content.content_available or content.push_type == "background":
        aps["content-available"] = 1
    if content.mutable_content:
        aps["mutable-content"] = 1
    if content.input_push_token:
        aps["input-push-token"] = 1
    if content.push_type in RELOAD_PUSH_TYPES:
        aps["content-changed"] = True
    return {**(content.data or {}), "aps": aps}


def kept(data: bytes) -> bytes:
    """``data`` in an allocation of its own size, for bytes that outlive the call that made them.

    orjson (3.13) returns its output in the 4 KB buffer it wrote it into: 1,000 payloads in flight
    held 4 MB where 250 KB would do.
    """
    return bytes(memoryview(data))


def build_payload(content: NotificationContent) -> bytes:
    """The compact JSON payload; raises PayloadTooLarge over 4096 bytes (5120 for voip)."""
    try:
        payload = orjson.dumps(payload_dict(content))
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits in custom data
        raise InvalidNotification("data", f"cannot be encoded as APNs JSON: {exc}") from None
    if len(payload) > content.max_payload:
        raise PayloadTooLarge(len(payload), content.max_payload, content.push_type)
    return kept(payload)


def topic_for(bundle_id: str, push_type: str) -> str:
    """The apns-topic: the bundle id, with the suffix some push types require."""
    return bundle_id + TOPIC_SUFFIXES.get(push_type, "")


def build_headers(
    content: NotificationContent, bundle_id: str, apns_id: str | uuid.UUID | None = None
) -> dict[str, str]:
    """The apns-* request headers (authorization is added by the client)."""
    headers = {
        "apns-topic": topic_for(bundle_id, content.push_type),
        "apns-push-type": content.push_type,
        "apns-priority": str(content.effective_priority),
    }
    if apns_id is not None:
        headers["apns-id"] = str(apns_id)
    if content.expiration is not None:
        headers["apns-expiration"] = str(content.expiration)
    if content.collapse_id is not None:
        headers["apns-collapse-id"] = content.collapse_id
    return headers
