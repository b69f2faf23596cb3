"""Hypothesis strategies for notification content: any valid combination of the fields the API takes."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from noti.apns.payload import INTERRUPTION_LEVELS, LIVE_ACTIVITY_EVENTS, PUSH_TYPES

ALERT_FIELDS = ["title", "subtitle", "body", "title_loc_key", "title_loc_args", "subtitle_loc_key"]
ALERT_FIELDS += ["subtitle_loc_args", "loc_key", "loc_args", "launch_image"]

text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
ascii_id = st.from_regex(r"\A[!-~]([ -~]{0,20}[!-~])?\Z")
epoch = st.integers(0, 2**53)
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | text
json_scalars |= st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8
)
json_objects = st.dictionaries(text, json_values, max_size=4)

# Every optional content field of NotificationIn, with the values it accepts.
OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    **{name: text for name in ("title", "subtitle", "body", "title_loc_key", "subtitle_loc_key", "loc_key")},
    **{name: st.lists(text, max_size=3) for name in ("title_loc_args", "subtitle_loc_args", "loc_args")},
    "launch_image": text,
    "badge": st.integers(0, 2**31 - 1),
    "sound": text
    | st.fixed_dictionaries({"name": text}, optional={"critical": st.sampled_from([0, 1]), "volume": st.floats(0, 1)}),
    "category": text,
    "thread_id": text,
    "data": json_objects.filter(lambda data: "aps" not in data),
    "content_available": st.booleans(),
    "relevance_score": st.floats(0, 1),
    "target_content_id": text,
    "filter_criteria": text,
    "push_type": st.sampled_from(sorted(PUSH_TYPES)),
    "priority": st.sampled_from([10, 5, 1]),
    "expiration": epoch,
    "collapse_id": ascii_id,
    "interruption_level": st.sampled_from(sorted(INTERRUPTION_LEVELS)),
    "mutable_content": st.booleans(),
    "event": st.sampled_from(sorted(LIVE_ACTIVITY_EVENTS)),
    "content_state": json_objects,
    "timestamp": epoch,
    "dismissal_date": epoch,
    "stale_date": epoch,
    "attributes_type": text,
    "attributes": json_objects,
    "input_push_token": st.just(True),
    "input_push_channel": ascii_id,
}


LIVE_START_ONLY = ("attributes_type", "attributes", "input_push_token", "input_push_channel")


def sendable(content: dict[str, Any]) -> dict[str, Any]:
    """``content`` as Apple's rules allow it: a background push carries no alert and no priority 10;
    a Live Activity push is an update ActivityKit can use (noti.apns.payload)."""
    if content.get("push_type") == "liveactivity":
        content = {name: value for name, value in content.items() if name not in LIVE_START_ONLY}
        content |= {"event": "update", "timestamp": content.get("timestamp", 1)}
        content.setdefault("content_state", {})
        if content.get("priority") == 1:
            del content["priority"]
        return content
    if content.get("push_type") != "background":
        return content
    return {
        name: value
        for name, value in content.items()
        if name not in ALERT_FIELDS and not (name == "priority" and value == 10)
    }


@st.composite
def contents(draw: st.DrawFn, fields: st.SearchStrategy[frozenset[str]] | None = None) -> dict[str, Any]:
    """A valid content: the optional fields ``fields`` draws (any subset by default), each with a value."""
    chosen = draw(fields if fields is not None else st.frozensets(st.sampled_from(sorted(OPTIONAL))))
    return sendable({name: draw(OPTIONAL[name]) for name in sorted(chosen)})


def as_json_numbers(value: Any) -> Any:
    """``value`` with every number a float: JSON has one number type, and PostgreSQL's jsonb keeps a
    float's decimal text (6.1e16 comes back as the integer 61000000000000000)."""
    if isinstance(value, dict):
        return {key: as_json_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json_numbers(item) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value
