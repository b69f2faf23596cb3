"""Apple's rules: what APNs answers to one request (pure; no sockets, no clock, no randomness).

The reasons and their meanings are Apple's ("Handling notification responses from APNs");
the headers, topics and limits are those of "Sending notification requests to APNs".
Apple does not document the order of its checks beyond what each reason implies; ours
goes from the request's shape to who sends it, then what it says, then to whom:

1. method and path (405, 404), the device token present (MissingDeviceToken), no header twice;
2. the credential: a client certificate or a provider token (403 ...);
3. the headers: push type, topic (for this credential: TopicDisallowed), priority,
   expiration, collapse id, apns-id;
4. the device token's form, then the payload (empty, too large, not JSON);
5. a Live Activity's payload, as "Starting and updating Live Activities with ActivityKit
   push notifications" describes it (Apple does not document APNs' answer to a wrong one:
   ours is BadPayload, as for any payload the device could not use);
6. the device: a token APNs does not know (BadDeviceToken), one issued for another topic
   (DeviceTokenNotForTopic), one no longer active (410 Unregistered / ExpiredToken).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from noti.apns.payload import (
    LIVE_ACTIVITY_EVENTS,
    MAX_COLLAPSE_ID,
    MAX_PAYLOAD,
    MAX_VOIP_PAYLOAD,
    PUSH_TYPES,
    TOPIC_SUFFIXES,
)

TOKEN_MAX_AGE = 3600  # seconds Apple accepts a provider token after its iat
DEVICE_PATH = "/3/device/"
PRIORITIES = frozenset({"10", "5", "1"})
# Live Activity pushes are 10 (at once, drawing on the device's budget) or 5 (no budget).
LIVE_ACTIVITY_PRIORITIES = frozenset({"10", "5"})
HEX_DIGITS = frozenset("0123456789abcdef")
# apns-id: "a canonical UUID ... in the form 8-4-4-4-12" (Apple), in either case.
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}").fullmatch
_VERIFIED_CACHE = 10_000  # provider tokens remembered; APNs sees one per key every 20-60 minutes


@dataclass(frozen=True)
class RegisteredKey:
    """A provider signing key as the simulator knows it: its team's bundle ids and its public half."""

    team_id: str
    key_id: str
    bundle_ids: tuple[str, ...]
    public_key_pem: str


class Identity(NamedTuple):
    """Who signed a provider token, and when."""

    team_id: str
    key_id: str
    issued_at: int
    bundle_ids: tuple[str, ...]


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def der_signature(signature: bytes) -> bytes | None:
    """An ES256 JWS signature as ASN.1 DER: raw R||S (RFC 7518 §3.4) is converted, DER kept; None if neither."""
    if len(signature) == 64:
        return encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        decode_dss_signature(signature)  # Apple accepts DER too (Pushy, and Java's signers, write it)
    except ValueError:
        return None
    return signature


class Keyring:
    """The provider keys APNs knows, and which provider tokens they signed (verified once each)."""

    def __init__(self, keys: Iterable[RegisteredKey] = ()) -> None:
        self.keys: dict[tuple[str, str], RegisteredKey] = {}
        self._public: dict[tuple[str, str], ec.EllipticCurvePublicKey] = {}
        self._verified: dict[str, Identity | None] = {}
        for key in keys:
            self.register(key)

    def register(self, key: RegisteredKey) -> None:
        public = serialization.load_pem_public_key(key.public_key_pem.encode())
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
            raise ValueError(f"the key {key.team_id}/{key.key_id} is not a P-256 public key")
        self.keys[(key.team_id, key.key_id)] = key
        self._public[(key.team_id, key.key_id)] = public
        self._verified.clear()  # a token may now verify (or no longer)

    def identify(self, token: str) -> Identity | None:
        """Who signed this provider token (any age), or None when it is not a valid ES256 JWT of a known key."""
        try:
            return self._verified[token]
        except KeyError:
            pass
        identity = self._verify(token)
        if len(self._verified) >= _VERIFIED_CACHE:
            self._verified.clear()
        self._verified[token] = identity
        return identity

    def _verify(self, token: str) -> Identity | None:
        try:
            header_part, claims_part, signature_part = token.split(".")
            header, claims = orjson.loads(_b64url(header_part)), orjson.loads(_b64url(claims_part))
            signature = der_signature(_b64url(signature_part))
            team, kid, iat = str(claims["iss"]), str(header["kid"]), int(claims["iat"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        public = self._public.get((team, kid))
        if public is None or signature is None or header.get("alg") != "ES256":
            return None
        try:
            public.verify(signature, f"{header_part}.{claims_part}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return None
        return Identity(team, kid, iat, self.keys[(team, kid)].bundle_ids)


@dataclass(frozen=True, slots=True)
class Device:
    """A token APNs issued (a device, push-to-start, update or VoIP token): the topics it was issued
    for, and when it stopped being valid (ms) and why (Unregistered, or ExpiredToken)."""

    topics: frozenset[str]
    unregistered_at: int | None = None
    reason: str = "Unregistered"


@dataclass
class Directory:
    """What APNs knows beyond the request: provider keys, and (optionally) the device tokens it issued."""

    keys: Keyring = field(default_factory=Keyring)
    devices: dict[str, Device] | None = None  # None: every well-formed token exists, for every topic
    unregistered: frozenset[str] = frozenset()  # tokens answered 410 Unregistered, as of now
    expired: frozenset[str] = frozenset()  # tokens answered 410 ExpiredToken
    bad_tokens: frozenset[str] = frozenset()  # tokens answered 400 BadDeviceToken


class Request(NamedTuple):
    """One POST as it arrived: pseudo-headers included, and what the connection knows of its client."""

    headers: Mapping[str, str]
    body: bytes = b""
    cert_topics: tuple[str, ...] = ()  # the topics of the client certificate (certificate auth)
    connection_team: str | None = None  # the team of the first provider token on this connection
    duplicate_headers: bool = False


class Answer(NamedTuple):
    """APNs' answer: the status, the reason (None on success), and for 410 when the token stopped working."""

    status: int
    reason: str | None = None
    timestamp: int | None = None  # ms since the epoch
    team_id: str | None = None  # the team whose provider token was accepted (token auth)
    event: str | None = None  # an accepted Live Activity push: its event

    def body(self) -> bytes:
        """The JSON error body, or b"" on success."""
        if self.reason is None:
            return b""
        document: dict[str, Any] = {"reason": self.reason}
        if self.timestamp is not None:
            document["timestamp"] = self.timestamp
        return orjson.dumps(document)


ACCEPTED = Answer(200)


def topic_allowed(topic: str, push_type: str, bundle_ids: tuple[str, ...]) -> bool:
    """Whether a credential of these bundle ids may push this push type to ``topic`` (without building a set)."""
    suffix = TOPIC_SUFFIXES.get(push_type, "")
    return topic.endswith(suffix) and topic[: len(topic) - len(suffix)] in bundle_ids


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def live_activity_problem(aps: Mapping[str, Any]) -> str | None:
    """Why ActivityKit could not use this ``aps`` of a liveactivity push, or None when it can.

    Every event has a timestamp; a start names its attributes type with the attributes, the
    content state and an alert; an update has a content state; input-push-token (1) and
    input-push-channel belong to starts, and not together.
    """
    event = aps.get("event")
    if event not in LIVE_ACTIVITY_EVENTS:
        return "aps.event is start, update or end"
    if not _is_int(aps.get("timestamp")):
        return "aps.timestamp (epoch seconds) is required"
    for key in ("stale-date", "dismissal-date"):
        if key in aps and not _is_int(aps[key]):
            return f"aps.{key} is epoch seconds"
    score = aps.get("relevance-score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        return "aps.relevance-score is a number"
    if "content-state" in aps and not isinstance(aps["content-state"], dict):
        return "aps.content-state is an object"
    if event == "start":
        if not isinstance(aps.get("attributes-type"), str) or not isinstance(aps.get("attributes"), dict):
            return "a start names aps.attributes-type and gives aps.attributes"
        if "content-state" not in aps:
            return "a start gives aps.content-state"
        if "alert" not in aps:
            return "a start gives aps.alert"
        if "input-push-token" in aps and not (_is_int(aps["input-push-token"]) and aps["input-push-token"] == 1):
            return "aps.input-push-token is 1"
        if "input-push-channel" in aps and not isinstance(aps["input-push-channel"], str):
            return "aps.input-push-channel is a channel id"
        if "input-push-token" in aps and "input-push-channel" in aps:
            return "a start asks for an update token or a channel, not both"
        return None
    for key in ("attributes-type", "attributes", "input-push-token", "input-push-channel"):
        if key in aps:
            return f"aps.{key} is for starts only"
    if event == "update" and "content-state" not in aps:
        return "an update gives aps.content-state"
    return None


def judge(request: Request, directory: Directory, now: float) -> Answer:
    """Apple's answer to ``request`` at time ``now`` (epoch seconds), given what APNs knows."""
    headers = request.headers
    if headers.get(":method") != "POST":
        return Answer(405, "MethodNotAllowed")
    path = headers.get(":path", "")
    if not path.startswith(DEVICE_PATH):
        return Answer(404, "BadPath")
    token = path[len(DEVICE_PATH) :].lower()
    if not token:
        return Answer(400, "MissingDeviceToken")
    if request.duplicate_headers:
        return Answer(400, "DuplicateHeaders")

    # The credential. A connection with a client certificate needs no provider token.
    authorization = headers.get("authorization")
    team_id: str | None = None
    if request.cert_topics and not authorization:
        bundle_ids = request.cert_topics
    else:
        if not authorization or authorization[:7].lower() != "bearer ":
            return Answer(403, "MissingProviderToken")
        identity = directory.keys.identify(authorization[7:].strip())
        if identity is None:
            return Answer(403, "InvalidProviderToken")
        if now - identity.issued_at > TOKEN_MAX_AGE:
            return Answer(403, "ExpiredProviderToken")
        if request.connection_team is not None and identity.team_id != request.connection_team:
            return Answer(403, "UnrelatedKeyIdInToken")
        team_id, bundle_ids = identity.team_id, identity.bundle_ids

    push_type = headers.get("apns-push-type", "alert")
    if push_type not in PUSH_TYPES:
        return Answer(400, "InvalidPushType", team_id=team_id)
    topic = headers.get("apns-topic")
    if not topic and team_id is None and len(request.cert_topics) == 1:
        topic = request.cert_topics[0]  # Apple defaults to a single-topic certificate's subject
    if not topic:
        return Answer(400, "MissingTopic", team_id=team_id)
    if not topic_allowed(topic, push_type, bundle_ids) or (push_type == "location" and team_id is None):
        # Not this credential's to push to (location pushes take token auth only).
        return Answer(400, "TopicDisallowed", team_id=team_id)
    priority = headers.get("apns-priority", "10")
    if priority not in PRIORITIES or (push_type == "background" and priority == "10"):
        return Answer(400, "BadPriority", team_id=team_id)  # "Using priority 10 [for background] is an error"
    if push_type == "liveactivity" and priority not in LIVE_ACTIVITY_PRIORITIES:
        return Answer(400, "BadPriority", team_id=team_id)
    expiration = headers.get("apns-expiration")
    if expiration is not None and not expiration.isdigit():
        return Answer(400, "BadExpirationDate", team_id=team_id)
    collapse_id = headers.get("apns-collapse-id")
    if collapse_id is not None and len(collapse_id.encode()) > MAX_COLLAPSE_ID:
        return Answer(400, "BadCollapseId", team_id=team_id)
    apns_id = headers.get("apns-id")
    if apns_id is not None and not _CANONICAL_UUID(apns_id):
        return Answer(400, "BadMessageId", team_id=team_id)

    if len(token) < 64 or len(token) % 2 or not HEX_DIGITS.issuperset(token):
        return Answer(400, "BadDeviceToken", team_id=team_id)
    body = request.body
    if not body:
        return Answer(400, "PayloadEmpty", team_id=team_id)
    if len(body) > (MAX_VOIP_PAYLOAD if push_type == "voip" else MAX_PAYLOAD):
        return Answer(413, "PayloadTooLarge", team_id=team_id)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Answer(400, "BadPayload", team_id=team_id)
    if not isinstance(document, dict) or not isinstance(document.get("aps"), dict):
        return Answer(400, "BadPayload", team_id=team_id)
    event = None
    if push_type == "liveactivity":
        if live_activity_problem(document["aps"]) is not None:
            return Answer(400, "BadPayload", team_id=team_id)
        event = document["aps"]["event"]

    if token in directory.bad_tokens:
        return Answer(400, "BadDeviceToken", team_id=team_id)
    if directory.devices is not None:
        device = directory.devices.get(token)
        if device is None:
            return Answer(400, "BadDeviceToken", team_id=team_id)  # well-formed, but APNs never issued it
        if topic not in device.topics:
            return Answer(400, "DeviceTokenNotForTopic", team_id=team_id)
        if device.unregistered_at is not None:
            return Answer(410, device.reason, device.unregistered_at, team_id)
    if token in directory.unregistered:
        return Answer(410, "Unregistered", int(now * 1000), team_id)
    if token in directory.expired:
        return Answer(410, "ExpiredToken", int(now * 1000), team_id)
    if team_id is None and event is None:
        return ACCEPTED
    return Answer(200, None, None, team_id, event)
