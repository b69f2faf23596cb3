"""Apple's channel rules as the simulator applies them: requests and APNs' answers (no TLS, no server)."""

from __future__ import annotations

import base64
import itertools

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from noti.apns.simulator.channels import MAX_CHANNELS, Channel, Channels, broadcast, manage, well_formed_channel_id
from noti.apns.simulator.rules import Directory, Keyring, RegisteredKey, Request
from noti.apns.tokens import mint

NOW = 1_800_000_000.0
TEAM, KID, BUNDLE = "TEAM123456", "KEY1234567", "com.example.app"
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
DIRECTORY = Directory(Keyring([RegisteredKey(TEAM, KID, (BUNDLE,), PUBLIC.decode())]))
BEARER = "bearer " + mint(KEY, KID, TEAM, int(NOW) - 60)
UPDATE = b'{"aps":{"event":"update","timestamp":1800000000,"content-state":{"score":"1-0"}}}'
_ids = (base64.b64encode(n.to_bytes(16, "big")).decode() for n in itertools.count(1))


def _new_id() -> str:
    return next(_ids)


def _manage(channels: Channels, method: str, path: str, body: object = None, **headers: str) -> tuple[int, object]:
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    sent = {":method": method, ":path": path, "authorization": BEARER, **named}
    raw = orjson.dumps(body) if body is not None and not isinstance(body, bytes) else (body or b"")
    answer = manage(Request(sent, raw), DIRECTORY, channels, NOW, _new_id)
    return answer.status, answer.reason or (dict(answer.headers) | (answer.document or {}))


def _create(channels: Channels, policy: int = 1) -> str:
    status, answer = _manage(
        channels, "POST", f"/1/apps/{BUNDLE}/channels", {"message-storage-policy": policy, "push-type": "LiveActivity"}
    )
    assert status == 201
    assert isinstance(answer, dict)
    return str(answer["apns-channel-id"])


def _broadcast(
    channels: Channels, channel_id: str | None, body: bytes = UPDATE, **headers: str
) -> tuple[int, str | None]:
    sent = {
        ":method": "POST", ":path": f"/4/broadcasts/apps/{BUNDLE}", "authorization": BEARER,
        "apns-push-type": "liveactivity", **({"apns-channel-id": channel_id} if channel_id else {}),
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }  # fmt: skip
    answer = broadcast(Request(sent, body), DIRECTORY, channels, NOW)
    return answer.status, answer.reason


def test_a_created_channel_can_be_read_listed_and_deleted() -> None:
    channels = Channels()
    channel_id = _create(channels, policy=0)
    assert well_formed_channel_id(channel_id)
    assert _manage(channels, "GET", f"/1/apps/{BUNDLE}/channels", apns_channel_id=channel_id) == (
        200, {"message-storage-policy": 0, "push-type": "LiveActivity"},
    )  # fmt: skip
    assert _manage(channels, "GET", f"/1/apps/{BUNDLE}/all-channels") == (200, {"channels": [channel_id]})
    assert _manage(channels, "DELETE", f"/1/apps/{BUNDLE}/channels", apns_channel_id=channel_id)[0] == 204
    assert _manage(channels, "DELETE", f"/1/apps/{BUNDLE}/channels", apns_channel_id=channel_id) == (
        400, "ChannelNotRegistered",
    )  # fmt: skip
    assert channels.counters()["created"] == 1 and channels.counters()["deleted"] == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"message-storage-policy": 2, "push-type": "LiveActivity"}, "MissingChannelQueueSize"),
        ({"push-type": "LiveActivity"}, "MissingChannelQueueSize"),
        ({"message-storage-policy": True, "push-type": "LiveActivity"}, "MissingChannelQueueSize"),
        ({"message-storage-policy": 1}, "MissingPushType"),
        ({"message-storage-policy": 1, "push-type": "alert"}, "InvalidPushType"),
        (b"not json", "BadRequestPayload"),
    ],
)
def test_a_create_apple_would_refuse_is_refused(body: object, reason: str) -> None:
    assert _manage(Channels(), "POST", f"/1/apps/{BUNDLE}/channels", body) == (400, reason)


def test_requests_for_channels_that_are_not_there_are_told_apart() -> None:
    channels = Channels()
    path = f"/1/apps/{BUNDLE}/channels"
    assert _manage(channels, "GET", path) == (400, "MissingChannelId")
    assert _manage(channels, "GET", path, apns_channel_id="not-a-channel") == (400, "BadChannelId")
    unknown = base64.b64encode(b"\x00" * 16).decode()
    assert _manage(channels, "GET", path, apns_channel_id=unknown) == (400, "ChannelNotRegistered")


def test_an_app_has_at_most_ten_thousand_channels() -> None:
    channels = Channels(by_app={BUNDLE: {str(n): Channel(0) for n in range(MAX_CHANNELS)}})
    body = {"message-storage-policy": 0, "push-type": "LiveActivity"}
    assert _manage(channels, "POST", f"/1/apps/{BUNDLE}/channels", body) == (400, "CannotCreateChannelConfig")


@pytest.mark.parametrize(
    ("method", "path", "status", "reason"),
    [
        ("PUT", f"/1/apps/{BUNDLE}/channels", 405, "MethodNotAllowed"),
        ("POST", f"/1/apps/{BUNDLE}/all-channels", 405, "MethodNotAllowed"),
        ("GET", f"/1/apps/{BUNDLE}/chanels", 404, "BadPath"),
        ("GET", "/3/device/abcd", 404, "BadPath"),
        ("GET", "/1/apps/com.other.app/all-channels", 400, "TopicDisallowed"),
    ],
)
def test_management_paths_methods_and_apps(method: str, path: str, status: int, reason: str) -> None:
    assert _manage(Channels(), method, path) == (status, reason)


def test_management_without_a_valid_provider_token_is_forbidden() -> None:
    path = f"/1/apps/{BUNDLE}/all-channels"
    assert manage(Request({":method": "GET", ":path": path}), DIRECTORY, Channels(), NOW, _new_id).reason == (
        "MissingProviderToken"
    )
    old = "bearer " + mint(KEY, KID, TEAM, int(NOW) - 4000)
    request = Request({":method": "GET", ":path": path, "authorization": old})
    answer = manage(request, DIRECTORY, Channels(), NOW, _new_id)
    assert (answer.status, answer.reason) == (403, "ExpiredProviderToken")


def test_a_broadcast_to_a_channel_is_accepted_and_counted() -> None:
    channels = Channels()
    channel_id = _create(channels, policy=1)
    assert _broadcast(channels, channel_id, apns_expiration="1800003600", apns_priority="5") == (200, None)
    assert channels.counters()["broadcasts"] == 1
    assert channels.counters()["by_channel"] == {channel_id: 1}


def test_broadcast_errors_are_apples() -> None:
    channels = Channels()
    stored, unstored = _create(channels, policy=1), _create(channels, policy=0)
    unknown = base64.b64encode(b"\x01" * 16).decode()
    assert _broadcast(channels, None) == (400, "MissingChannelId")
    assert _broadcast(channels, "###") == (400, "BadChannelId")
    assert _broadcast(channels, unknown) == (400, "ChannelNotRegistered")
    assert _broadcast(channels, stored, apns_push_type="alert") == (400, "InvalidPushType")
    assert _broadcast(channels, stored, apns_priority="7") == (400, "BadPriority")
    assert _broadcast(channels, stored, apns_expiration="soon") == (400, "BadExpirationDate")
    assert _broadcast(channels, unstored, apns_expiration="1800003600") == (400, "BadExpirationDate")
    assert _broadcast(channels, stored, b"") == (400, "PayloadEmpty")
    big = b'{"aps":{"event":"update","content-state":{"x":"' + b"a" * 5100 + b'"}}}'
    assert _broadcast(channels, stored, big) == (413, "PayloadTooLarge")
    assert _broadcast(channels, stored, b'{"no":"aps"}') == (400, "BadPayload")
    assert channels.counters()["broadcasts"] == 0


def test_a_channel_of_one_app_is_unknown_to_another() -> None:
    channels = Channels()
    channel_id = _create(channels)
    channels.by_app["com.example.app"].pop(channel_id)
    channels.by_app.setdefault("com.example.other", {})[channel_id] = Channel(1)
    assert _broadcast(channels, channel_id) == (400, "ChannelNotRegistered")


# --- workers ---


def test_channel_management_with_more_than_one_worker_is_refused_with_one_line() -> None:
    from click.testing import CliRunner

    from noti.apns.simulator.cli import main
    from noti.apns.simulator.server import SimulatorConfig

    result = CliRunner().invoke(main, ["--workers", "2", "--port", "0", "--control-port", "0", "--channels-port", "0"])
    assert result.exit_code == 2
    assert "channel management keeps its channels in one process: use --workers 1, or --channels-port -1" in (
        result.output
    )
    assert "Traceback" not in result.output
    with pytest.raises(ValueError, match="--workers 1"):
        SimulatorConfig(workers=2, channels_port=0)
    assert SimulatorConfig(workers=2, channels_port=None).workers == 2  # no channels: workers may share the port
