"""Payload and header building from notification content, and Apple's size limits."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from noti.apns.client import ENDPOINTS
from noti.apns.payload import (
    INTERRUPTION_LEVELS,
    LIVE_ACTIVITY_EVENTS,
    PRIORITIES,
    PUSH_TYPES,
    TOPIC_SUFFIXES,
    InvalidNotification,
    NotificationContent,
    PayloadTooLarge,
    build_headers,
    build_payload,
    validate_device_token,
)
from noti.gateway.schemas import NotificationIn
from noti.queue import ENVIRONMENTS

ROOT = Path(__file__).resolve().parents[1]


def test_alert_payload_puts_custom_data_at_top_level() -> None:
    content = NotificationContent(
        title="Sale",
        body="30% off",
        badge=3,
        sound={"critical": 1, "name": "alarm.caf", "volume": 0.8},
        thread_id="sale",
        mutable_content=True,
        interruption_level="time-sensitive",
        relevance_score=0.5,
        data={"deeplink": "app://sale"},
    )
    payload = orjson.loads(build_payload(content))
    assert payload == {
        "deeplink": "app://sale",
        "aps": {
            "alert": {"title": "Sale", "body": "30% off"},
            "badge": 3,
            "sound": {"critical": 1, "name": "alarm.caf", "volume": 0.8},
            "thread-id": "sale",
            "interruption-level": "time-sensitive",
            "relevance-score": 0.5,
            "mutable-content": 1,
        },
    }


def test_background_and_live_activity_payloads_and_headers() -> None:
    background = NotificationContent(push_type="background", data={"sync": True})
    assert orjson.loads(build_payload(background))["aps"] == {"content-available": 1}
    assert build_headers(background, "com.example.app")["apns-priority"] == "5"

    live = NotificationContent(
        push_type="liveactivity", event="update", content_state={"score": "2-1"}, timestamp=1700000000
    )
    assert orjson.loads(build_payload(live))["aps"]["content-state"] == {"score": "2-1"}
    headers = build_headers(live, "com.example.app", apns_id="0f3c1a52-2f1e-4b59-9b4e-2f0b0d6f3c11")
    assert headers["apns-topic"] == "com.example.app.push-type.liveactivity"
    assert headers["apns-id"] == "0f3c1a52-2f1e-4b59-9b4e-2f0b0d6f3c11"


def test_topic_suffix_expiration_and_collapse_headers() -> None:
    voip = NotificationContent(push_type="voip", data={"call": "x"}, expiration=0, collapse_id="c" * 64)
    headers = build_headers(voip, "com.example.app")
    assert headers == {
        "apns-topic": "com.example.app.voip",
        "apns-push-type": "voip",
        "apns-priority": "10",
        "apns-expiration": "0",
        "apns-collapse-id": "c" * 64,
    }


def test_oversize_payload_error_names_limit_and_size() -> None:
    with pytest.raises(PayloadTooLarge, match=r"payload is \d+ bytes; APNs allows at most 4096 for alert"):
        build_payload(NotificationContent(body="x" * 4100))
    voip = NotificationContent(push_type="voip", data={"blob": "x" * 4500})
    assert len(build_payload(voip)) > 4096  # voip allows 5120


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"collapse_id": "c" * 65}, "collapse_id"),
        ({"priority": 7}, "priority"),
        ({"push_type": "background", "priority": 10}, "priority"),
        ({"push_type": "sms"}, "push_type"),
        ({"badge": -1}, "badge"),
        ({"badge": True}, "badge"),
        ({"interruption_level": "loud"}, "interruption_level"),
        ({"data": {"aps": {}}}, "data"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_fields_are_named(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidNotification) as error:
        NotificationContent.from_dict(fields)
    assert error.value.field == field


# Apple, "Sending notification requests to APNs", apns-push-type: the topic each push type is sent to.
@pytest.mark.parametrize(
    ("push_type", "topic"),
    [
        ("alert", "com.example.app"),
        ("background", "com.example.app"),
        ("voip", "com.example.app.voip"),
        ("complication", "com.example.app.complication"),
        ("fileprovider", "com.example.app.pushkit.fileprovider"),
        ("liveactivity", "com.example.app.push-type.liveactivity"),
        ("location", "com.example.app.location-query"),
        ("pushtotalk", "com.example.app.voip-ptt"),
        ("widgets", "com.example.app.push-type.widgets"),
        ("controls", "com.example.app.push-type.controls"),
        ("mdm", "com.example.app"),
    ],
)
def test_each_push_type_goes_to_apples_topic(push_type: str, topic: str) -> None:
    assert push_type in PUSH_TYPES
    live = {"event": "update", "content_state": {"x": 1}, "timestamp": 1} if push_type == "liveactivity" else {}
    content = NotificationContent(push_type=push_type, data={"x": 1}, **live)  # type: ignore[arg-type]
    assert build_headers(content, "com.example.app")["apns-topic"] == topic


def test_every_push_type_apple_documents_is_known() -> None:
    documented = {"alert", "background", "voip", "complication", "fileprovider", "liveactivity", "location", "mdm",
                  "pushtotalk", "widgets", "controls"}  # fmt: skip
    assert documented == PUSH_TYPES


def test_widget_and_control_reloads_say_content_changed() -> None:
    for push_type in ("widgets", "controls"):
        payload = orjson.loads(build_payload(NotificationContent(push_type=push_type)))
        assert payload == {"aps": {"content-changed": True}}


def _crd_spec(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / name).read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])


def _api_enum(name: str) -> set[Any]:
    """The values the API's published schema (what clients are generated from) allows for a send's field."""
    field = NotificationIn.model_json_schema()["properties"][name]
    return set(next(choice for choice in field.get("anyOf", [field]) if "enum" in choice)["enum"])


def test_the_api_the_crds_and_the_client_offer_the_same_push_types_levels_priorities_and_environments() -> None:
    campaign = _crd_spec("notificationcampaigns.noti.dev.yaml")["notification"]["properties"]
    assert set(campaign["pushType"]["enum"]) == _api_enum("push_type") == PUSH_TYPES == set(TOPIC_SUFFIXES) | {
        "alert", "background", "mdm",
    }  # fmt: skip
    assert set(campaign["interruptionLevel"]["enum"]) == _api_enum("interruption_level") == INTERRUPTION_LEVELS
    assert set(campaign["priority"]["enum"]) == _api_enum("priority") == PRIORITIES
    assert _api_enum("event") == LIVE_ACTIVITY_EVENTS
    environments = set(_crd_spec("apnscredentials.noti.dev.yaml")["environment"]["enum"])
    assert environments == _api_enum("environment") == set(ENVIRONMENTS) == set(ENDPOINTS)


def test_device_token_validation_says_why() -> None:
    assert validate_device_token("AB" * 32) == "ab" * 32
    for token, why in [("ab" * 10, "at least 64"), ("a" * 65, "even number"), ("zz" * 32, "only hex digits")]:
        with pytest.raises(InvalidNotification, match=why):
            validate_device_token(token)


text = st.text(max_size=300)
contents = st.builds(
    NotificationContent,
    title=st.none() | text,
    subtitle=st.none() | text,
    body=st.none() | st.text(max_size=5000),
    badge=st.none() | st.integers(min_value=0, max_value=10_000),
    sound=st.none() | text,
    thread_id=st.none() | text,
    data=st.none() | st.dictionaries(st.text(max_size=10).filter(lambda k: k != "aps"), text, max_size=5),
    push_type=st.sampled_from(["alert", "voip"]),
)


@given(contents)
def test_payload_is_within_limit_or_refused_and_round_trips(content: NotificationContent) -> None:
    assert NotificationContent.from_dict(content.to_dict()) == content
    try:
        payload = build_payload(content)
    except PayloadTooLarge as error:
        assert error.size > error.limit == content.max_payload
    else:
        assert len(payload) <= content.max_payload
        decoded = orjson.loads(payload)
        if content.body is not None:
            assert decoded["aps"]["alert"]["body"] == content.body


def test_numbers_json_cannot_carry_are_refused_not_crashed_on() -> None:
    with pytest.raises(InvalidNotification, match="data: cannot be encoded"):
        build_payload(NotificationContent(title="x", data={"big": -71353849071570100224}))


# --- Live Activities: what ActivityKit needs of each event, refused before it is queued ---

LIVE_START: dict[str, Any] = {
    "push_type": "liveactivity", "event": "start", "timestamp": 1_800_000_000, "attributes_type": "Delivery",
    "attributes": {"order": "A-17"}, "content_state": {"eta": 12}, "title": "On its way", "body": "ETA 12",
}  # fmt: skip


def test_a_live_activity_start_builds_apples_payload_on_the_liveactivity_topic() -> None:
    content = NotificationContent.from_dict({**LIVE_START, "input_push_token": True})
    aps = orjson.loads(build_payload(content))["aps"]
    assert aps == {
        "alert": {"title": "On its way", "body": "ETA 12"}, "event": "start", "timestamp": 1_800_000_000,
        "attributes-type": "Delivery", "attributes": {"order": "A-17"}, "content-state": {"eta": 12},
        "input-push-token": 1,
    }  # fmt: skip
    headers = build_headers(content, "com.example.app")
    assert headers["apns-topic"] == "com.example.app.push-type.liveactivity"
    assert headers["apns-push-type"] == "liveactivity"
    assert headers["apns-priority"] == "10"  # an alerting start shows at once


def test_a_silent_live_activity_update_defaults_to_priority_5_outside_the_budget() -> None:
    content = NotificationContent(push_type="liveactivity", event="update", content_state={"eta": 5}, timestamp=1)
    assert build_headers(content, "com.example.app")["apns-priority"] == "5"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"event": None}, "event"),
        ({"timestamp": None}, "timestamp"),
        ({"attributes_type": None}, "attributes_type"),
        ({"attributes": None}, "attributes"),
        ({"content_state": None}, "content_state"),
        ({"title": None, "body": None}, "title"),
        ({"input_push_token": True, "input_push_channel": "abc"}, "input_push_channel"),
        ({"dismissal_date": 1}, "dismissal_date"),
        ({"event": "update", "attributes": None, "attributes_type": None, "content_state": None}, "content_state"),
        ({"event": "end", "attributes_type": None, "input_push_token": True}, "attributes"),
        ({"priority": 1}, "priority"),
    ],
)
def test_a_live_activity_push_activitykit_could_not_use_is_refused_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    values = {key: value for key, value in {**LIVE_START, **changes}.items() if value is not None}
    with pytest.raises(InvalidNotification) as error:
        NotificationContent.from_dict(values)
    assert error.value.field == field


def test_payloads_in_flight_hold_about_their_own_size_in_memory() -> None:
    contents = [NotificationContent(title="Hello", body=f"notification {i}" * 10) for i in range(1_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        payloads = [build_payload(content) for content in contents]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    size = sum(len(payload) for payload in payloads)
    # orjson's own output keeps the 4 KB it was written into: 4 MB for these 1,000 payloads of ~200 bytes.
    assert held < 2 * size + 100 * len(payloads)
