"""Apple's rules as the simulator applies them: a table of requests and APNs' answers (no TLS, no server)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from noti.apns.simulator.rules import Device, Directory, Keyring, RegisteredKey, Request, judge
from noti.apns.tokens import mint

NOW = 1_800_000_000.0
TEAM, KID, BUNDLE = "TEAM123456", "KEY1234567", "com.example.app"
DEVICE = "ab" * 32
OTHER_DEVICE = "cd" * 32
ALERT = b'{"aps":{"alert":"Hi"}}'
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_TEAM_KEY = ec.generate_private_key(ec.SECP256R1())


def _public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


KEYS = Keyring(
    [
        RegisteredKey(TEAM, KID, (BUNDLE, "com.example.other"), _public_pem(KEY)),
        RegisteredKey("OTHERTEAM1", "KEY7654321", ("com.other.app",), _public_pem(OTHER_TEAM_KEY)),
    ]
)
TOKEN = mint(KEY, KID, TEAM, int(NOW) - 60)


def _der(jwt: str) -> str:
    """The same provider token with its signature in ASN.1 DER, as Pushy and Java signers write it."""
    head, claims, signature = jwt.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    return f"{head}.{claims}.{base64.urlsafe_b64encode(der).rstrip(b'=').decode()}"


def _request(device: str = DEVICE, body: bytes = ALERT, **changes: str | None) -> Request:
    headers: dict[str, str | None] = {
        ":method": "POST",
        ":path": f"/3/device/{device}",
        "authorization": f"bearer {TOKEN}",
        "apns-topic": BUNDLE,
        "apns-push-type": "alert",
        **{name.replace("_", "-"): value for name, value in changes.items()},
    }
    return Request({name: value for name, value in headers.items() if value is not None}, body)


def _answer(request: Request, directory: Directory | None = None) -> tuple[int, str | None]:
    answer = judge(request, directory or Directory(KEYS), NOW)
    return answer.status, answer.reason


REGISTRY = {
    DEVICE: Device(frozenset({BUNDLE})),
    OTHER_DEVICE: Device(frozenset({f"{BUNDLE}.voip"})),
}

CASES: list[tuple[str, Request, Directory | None, tuple[int, str | None]]] = [
    ("a good alert", _request(), None, (200, None)),
    ("GET", _request(**{":method": "GET"}), None, (405, "MethodNotAllowed")),
    ("another path", _request(**{":path": "/3/devices/x"}), None, (404, "BadPath")),
    ("no device token", _request(device=""), None, (400, "MissingDeviceToken")),
    ("no provider token", _request(authorization=None), None, (403, "MissingProviderToken")),
    ("basic auth", _request(authorization="basic abc"), None, (403, "MissingProviderToken")),
    ("garbage token", _request(authorization="bearer abc.def.ghi"), None, (403, "InvalidProviderToken")),
    (
        "token of an unknown key",
        _request(authorization=f"bearer {mint(ec.generate_private_key(ec.SECP256R1()), KID, TEAM, int(NOW))}"),
        None,
        (403, "InvalidProviderToken"),
    ),
    (
        "token older than an hour",
        _request(authorization=f"bearer {mint(KEY, KID, TEAM, int(NOW) - 3601)}"),
        None,
        (403, "ExpiredProviderToken"),
    ),
    ("DER-signed token", _request(authorization=f"bearer {_der(TOKEN)}"), None, (200, None)),
    ("bad push type", _request(apns_push_type="banner"), None, (400, "InvalidPushType")),
    ("no topic", _request(apns_topic=None), None, (400, "MissingTopic")),
    ("topic of no app of this team", _request(apns_topic="com.stranger.app"), None, (400, "TopicDisallowed")),
    ("voip without its suffix", _request(apns_push_type="voip"), None, (400, "TopicDisallowed")),
    ("voip with its suffix", _request(apns_push_type="voip", apns_topic=f"{BUNDLE}.voip"), None, (200, None)),
    ("widgets", _request(apns_push_type="widgets", apns_topic=f"{BUNDLE}.push-type.widgets"), None, (200, None)),
    ("controls", _request(apns_push_type="controls", apns_topic=f"{BUNDLE}.push-type.controls"), None, (200, None)),
    ("priority 7", _request(apns_priority="7"), None, (400, "BadPriority")),
    (
        "background at priority 10",
        _request(apns_push_type="background", apns_priority="10"),
        None,
        (400, "BadPriority"),
    ),
    ("background at priority 5", _request(apns_push_type="background", apns_priority="5"), None, (200, None)),
    ("expiration not a number", _request(apns_expiration="soon"), None, (400, "BadExpirationDate")),
    ("collapse id of 65 bytes", _request(apns_collapse_id="c" * 65), None, (400, "BadCollapseId")),
    ("collapse id of 64 bytes", _request(apns_collapse_id="c" * 64), None, (200, None)),
    ("apns-id not a UUID", _request(apns_id="not-a-uuid"), None, (400, "BadMessageId")),
    ("short device token", _request(device="ab" * 16), None, (400, "BadDeviceToken")),
    ("non-hex device token", _request(device="zz" * 32), None, (400, "BadDeviceToken")),
    ("upper-case device token", _request(device="AB" * 32), None, (200, None)),
    ("empty payload", _request(body=b""), None, (400, "PayloadEmpty")),
    ("4097-byte alert", _request(body=b'{"aps":{},"x":"' + b"x" * 4080 + b'"}'), None, (413, "PayloadTooLarge")),
    (
        "5000-byte voip",
        _request(body=b'{"aps":{},"x":"' + b"x" * 4980 + b'"}', apns_push_type="voip", apns_topic=f"{BUNDLE}.voip"),
        None,
        (200, None),
    ),
    ("payload not JSON", _request(body=b"{"), None, (400, "BadPayload")),
    ("payload without aps", _request(body=b'{"x":1}'), None, (400, "BadPayload")),
    (
        "registry: a token APNs never issued",
        _request(device="ef" * 32),
        Directory(KEYS, dict(REGISTRY)),
        (400, "BadDeviceToken"),
    ),
    (
        "registry: the token of another app of the team",
        _request(apns_topic="com.example.other"),
        Directory(KEYS, dict(REGISTRY)),
        (400, "DeviceTokenNotForTopic"),
    ),
    (
        "registry: a VoIP token sent an alert",
        _request(device=OTHER_DEVICE),
        Directory(KEYS, dict(REGISTRY)),
        (400, "DeviceTokenNotForTopic"),
    ),
    ("registry: its own topic", _request(), Directory(KEYS, dict(REGISTRY)), (200, None)),
    (
        "registry: a stranger's topic is still the credential's fault",
        _request(apns_topic="com.stranger.app"),
        Directory(KEYS, dict(REGISTRY)),
        (400, "TopicDisallowed"),
    ),
    ("a bad token", _request(), Directory(KEYS, bad_tokens=frozenset({DEVICE})), (400, "BadDeviceToken")),
    ("an unregistered token", _request(), Directory(KEYS, unregistered=frozenset({DEVICE})), (410, "Unregistered")),
    ("an expired token", _request(), Directory(KEYS, expired=frozenset({DEVICE})), (410, "ExpiredToken")),
]


@pytest.mark.parametrize(("request_", "directory", "expected"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])  # fmt: skip
def test_apns_answers_each_request_as_apple_documents(
    request_: Request, directory: Directory | None, expected: tuple[int, str | None]
) -> None:
    assert _answer(request_, directory) == expected


def test_checks_run_in_order_from_the_request_to_the_device() -> None:
    everything_wrong = _request(
        device="zz", body=b"", authorization=None, apns_push_type="banner", apns_priority="7", apns_id="x"
    )
    assert _answer(everything_wrong) == (403, "MissingProviderToken")
    assert _answer(_request(device="zz", body=b"", apns_push_type="banner", apns_priority="7")) == (
        400,
        "InvalidPushType",
    )
    assert _answer(_request(device="zz", body=b"", apns_priority="7")) == (400, "BadPriority")
    assert _answer(_request(device="zz", body=b"")) == (400, "BadDeviceToken")
    assert _answer(_request(body=b""), Directory(KEYS, {})) == (400, "PayloadEmpty")


def test_an_unregistered_answer_says_when_apns_stopped_delivering() -> None:
    registry = {DEVICE: Device(frozenset({BUNDLE}), unregistered_at=1_700_000_000_000)}
    answer = judge(_request(), Directory(KEYS, registry), NOW)
    assert (answer.status, orjson.loads(answer.body())) == (
        410,
        {"reason": "Unregistered", "timestamp": 1_700_000_000_000},
    )
    now_answer = judge(_request(), Directory(KEYS, unregistered=frozenset({DEVICE})), NOW)
    assert orjson.loads(now_answer.body()) == {"reason": "Unregistered", "timestamp": int(NOW * 1000)}


def test_a_connection_keeps_to_the_team_of_its_first_provider_token() -> None:
    other_team = mint(OTHER_TEAM_KEY, "KEY7654321", "OTHERTEAM1", int(NOW))
    first = judge(_request(), Directory(KEYS), NOW)
    assert first.team_id == TEAM
    request = _request(authorization=f"bearer {other_team}", apns_topic="com.other.app")
    same_connection = Request(request.headers, request.body, connection_team=first.team_id)
    assert _answer(same_connection) == (403, "UnrelatedKeyIdInToken")
    assert _answer(request) == (200, None)  # on a connection of its own


def test_a_repeated_header_is_refused() -> None:
    request = _request()
    assert _answer(Request(request.headers, request.body, duplicate_headers=True)) == (400, "DuplicateHeaders")


def test_certificate_auth_pushes_to_the_certificates_topics_and_never_location() -> None:
    def by_certificate(topics: tuple[str, ...], **changes: Any) -> Request:
        request = _request(authorization=None, **changes)
        return Request(request.headers, request.body, cert_topics=topics)

    assert _answer(by_certificate((BUNDLE,))) == (200, None)
    assert _answer(by_certificate((BUNDLE,), apns_topic=None)) == (200, None)  # a single-topic certificate's own
    assert _answer(by_certificate((BUNDLE, "com.example.other"), apns_topic=None)) == (400, "MissingTopic")
    assert _answer(by_certificate(("com.example.other",))) == (400, "TopicDisallowed")
    location = by_certificate((BUNDLE,), apns_push_type="location", apns_topic=f"{BUNDLE}.location-query")
    assert _answer(location) == (400, "TopicDisallowed")  # location pushes take token auth only


def test_a_key_registered_again_verifies_tokens_anew() -> None:
    keys = Keyring([RegisteredKey(TEAM, KID, (BUNDLE,), _public_pem(OTHER_TEAM_KEY))])
    assert _answer(_request(), Directory(keys)) == (403, "InvalidProviderToken")
    keys.register(RegisteredKey(TEAM, KID, (BUNDLE,), _public_pem(KEY)))
    assert _answer(_request(), Directory(keys)) == (200, None)


# --- Live Activities ("Starting and updating Live Activities with ActivityKit push notifications") ---

LIVE_TOPIC = f"{BUNDLE}.push-type.liveactivity"
START_APS: dict[str, Any] = {
    "event": "start",
    "timestamp": int(NOW),
    "attributes-type": "DeliveryAttributes",
    "attributes": {"order": "A-17"},
    "content-state": {"eta": 12},
    "alert": {"title": "On its way", "body": "ETA 12 minutes"},
}
UPDATE_APS: dict[str, Any] = {"event": "update", "timestamp": int(NOW), "content-state": {"eta": 5}}


def _live(aps: dict[str, Any], **changes: str | None) -> Request:
    headers = {"apns_push_type": "liveactivity", "apns_topic": LIVE_TOPIC, "apns_priority": "10", **changes}
    return _request(body=orjson.dumps({"aps": aps}), **headers)


LIVE_CASES: list[tuple[str, Request, tuple[int, str | None]]] = [
    ("a start with everything ActivityKit needs", _live(START_APS), (200, None)),
    ("a start asking for its update token", _live({**START_APS, "input-push-token": 1}), (200, None)),
    ("a start joining a channel", _live({**START_APS, "input-push-channel": "dHN0LXNyY2gtY2hubA=="}), (200, None)),
    ("an update at priority 5 (no budget)", _live(UPDATE_APS, apns_priority="5"), (200, None)),
    ("an end with a dismissal date", _live({"event": "end", "timestamp": int(NOW), "dismissal-date": 1}), (200, None)),
    ("the bare bundle id as topic", _live(UPDATE_APS, apns_topic=BUNDLE), (400, "TopicDisallowed")),
    ("priority 1", _live(UPDATE_APS, apns_priority="1"), (400, "BadPriority")),
    ("no event", _live({k: v for k, v in UPDATE_APS.items() if k != "event"}), (400, "BadPayload")),
    ("an unknown event", _live({**UPDATE_APS, "event": "pause"}), (400, "BadPayload")),
    ("no timestamp", _live({k: v for k, v in UPDATE_APS.items() if k != "timestamp"}), (400, "BadPayload")),
    ("an update without content state", _live({"event": "update", "timestamp": int(NOW)}), (400, "BadPayload")),
    ("a start without an alert", _live({k: v for k, v in START_APS.items() if k != "alert"}), (400, "BadPayload")),
    ("a start without attributes", _live({k: v for k, v in START_APS.items() if k != "attributes"}),
     (400, "BadPayload")),
    ("input-push-token other than 1", _live({**START_APS, "input-push-token": True}), (400, "BadPayload")),
    ("token and channel at once", _live({**START_APS, "input-push-token": 1, "input-push-channel": "c"}),
     (400, "BadPayload")),
    ("attributes on an update", _live({**UPDATE_APS, "attributes-type": "DeliveryAttributes"}), (400, "BadPayload")),
    ("a stale date that is no number", _live({**UPDATE_APS, "stale-date": "soon"}), (400, "BadPayload")),
]  # fmt: skip


@pytest.mark.parametrize(("name", "request_", "expected"), LIVE_CASES, ids=[case[0] for case in LIVE_CASES])
def test_live_activity_pushes_are_judged_as_apple_documents_them(
    name: str, request_: Request, expected: tuple[int, str | None]
) -> None:
    assert _answer(request_) == expected


def test_an_accepted_live_activity_push_says_its_event() -> None:
    assert judge(_live(START_APS), Directory(KEYS), NOW).event == "start"
    assert judge(_request(), Directory(KEYS), NOW).event is None


def test_an_expired_push_to_start_token_in_the_registry_is_410_expired_token_with_its_time() -> None:
    expired_at = int(NOW * 1000) - 60_000
    directory = Directory(KEYS, devices={DEVICE: Device(frozenset({LIVE_TOPIC}), expired_at, "ExpiredToken")})
    answer = judge(_live(START_APS), directory, NOW)
    assert (answer.status, answer.reason, answer.timestamp) == (410, "ExpiredToken", expired_at)


def test_a_push_to_start_token_is_not_a_token_for_the_apps_alert_topic() -> None:
    directory = Directory(KEYS, devices={DEVICE: Device(frozenset({LIVE_TOPIC}))})
    assert _answer(_request(), directory) == (400, "DeviceTokenNotForTopic")
    assert _answer(_live(UPDATE_APS), directory) == (200, None)
