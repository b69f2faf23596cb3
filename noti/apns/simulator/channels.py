"""Apple's rules for broadcast channels: channel management and broadcast sends (no sockets, no clock, no randomness).

From "Sending channel management requests to APNs" and "Sending broadcast push notification
requests to APNs". Channel management has its own listener (Apple: another host and port);
broadcasts arrive on the push listener. The checks go, as for device pushes, from the
request's shape to who sends it, then what it says, then to which channel:

management (``/1/apps/<bundle id>/channels``, ``/1/apps/<bundle id>/all-channels``)
  1. path (404 BadPath) and method (405 MethodNotAllowed);
  2. the provider token (403 ...) and the app among its team's bundle ids (400 TopicDisallowed);
  3. create: a JSON object (BadRequestPayload), ``message-storage-policy`` 0 or 1
     (MissingChannelQueueSize, what Apple answers), ``push-type`` LiveActivity (MissingPushType,
     InvalidPushType), fewer than 10,000 channels (CannotCreateChannelConfig) → 201 + ``apns-channel-id``;
     read / delete: ``apns-channel-id`` present (MissingChannelId), one APNs could have issued
     (BadChannelId), a channel of this app (ChannelNotRegistered) → 200 settings / 204;
     list → 200 ``{"channels": [...]}``.

broadcast (``POST /4/broadcasts/apps/<bundle id>``)
  1. path and method; 2. credential and app, as above;
  3. ``apns-channel-id`` (MissingChannelId, BadChannelId), ``apns-push-type`` liveactivity
     (MissingPushType, InvalidPushType), priority 10/5/1 (BadPriority), expiration (BadExpirationDate);
  4. the channel exists (ChannelNotRegistered); a channel without storage keeps nothing, so it
     takes only ``apns-expiration: 0`` (BadExpirationDate);
  5. the payload: present (PayloadEmpty), at most 5120 bytes (413 PayloadTooLarge), JSON with an
     ``aps`` dictionary (BadPayload).

Every answer carries ``apns-request-id``: the request's, or a new one.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from noti.apns.simulator.rules import TOKEN_MAX_AGE, Directory, Request

MANAGEMENT_PREFIX = "/1/apps/"
BROADCAST_PREFIX = "/4/broadcasts/apps/"
MAX_CHANNELS = 10_000  # per app (and environment: one simulator is one environment)
MAX_BROADCAST_PAYLOAD = 5120
CHANNEL_ID_BYTES = 16  # Apple's channel ids are 16 bytes, base64 (e.g. "dHN/wjvVEe+ZSa6FUvKcOQ==")
STORAGE_POLICIES = (0, 1)
PRIORITIES = frozenset({"10", "5", "1"})


@dataclass(frozen=True, slots=True)
class Channel:
    storage_policy: int
    push_type: str = "LiveActivity"


@dataclass
class Channels:
    """The channels APNs holds, by app, and what was done with them."""

    by_app: dict[str, dict[str, Channel]] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)  # created, deleted, read, listed, broadcasts
    broadcasts: Counter[str] = field(default_factory=Counter)  # accepted broadcasts per channel id
    by_reason: Counter[str] = field(default_factory=Counter)  # refusals of channel and broadcast requests

    def counters(self) -> dict[str, Any]:
        return {
            "channels": sum(len(channels) for channels in self.by_app.values()),
            **{name: self.counts.get(name, 0) for name in ("created", "deleted", "read", "listed", "broadcasts")},
            "by_channel": dict(self.broadcasts),
            "by_reason": dict(self.by_reason),
        }

    def reset(self) -> None:
        """Clear the counters (the channels stay, as they would at Apple)."""
        self.counts.clear()
        self.broadcasts.clear()
        self.by_reason.clear()


class ChannelAnswer(NamedTuple):
    """APNs' answer to a channel or broadcast request: status, reason, extra headers, JSON body."""

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    document: dict[str, Any] | None = None

    def body(self) -> bytes:
        if self.reason is not None:
            return orjson.dumps({"reason": self.reason})
        return orjson.dumps(self.document) if self.document is not None else b""


def well_formed_channel_id(channel_id: str) -> bool:
    """Whether ``channel_id`` is one APNs could have issued: 16 bytes in standard base64."""
    try:
        return len(base64.b64decode(channel_id, validate=True)) == CHANNEL_ID_BYTES
    except (binascii.Error, ValueError):
        return False


def _authorized(request: Request, directory: Directory, now: float, bundle_id: str) -> ChannelAnswer | None:
    """The refusal of a request whose credential may not act for ``bundle_id``, or None."""
    authorization = request.headers.get("authorization")
    if request.cert_topics and not authorization:
        return None if bundle_id in request.cert_topics else ChannelAnswer(400, "TopicDisallowed")
    if not authorization or authorization[:7].lower() != "bearer ":
        return ChannelAnswer(403, "MissingProviderToken")
    identity = directory.keys.identify(authorization[7:].strip())
    if identity is None:
        return ChannelAnswer(403, "InvalidProviderToken")
    if now - identity.issued_at > TOKEN_MAX_AGE:
        return ChannelAnswer(403, "ExpiredProviderToken")
    if bundle_id not in identity.bundle_ids:
        return ChannelAnswer(400, "TopicDisallowed")
    return None


def _channel_of(headers: Any, channels: dict[str, Channel]) -> tuple[str, ChannelAnswer | None]:
    channel_id = headers.get("apns-channel-id")
    if not channel_id:
        return "", ChannelAnswer(400, "MissingChannelId")
    if not well_formed_channel_id(channel_id):
        return channel_id, ChannelAnswer(400, "BadChannelId")
    if channel_id not in channels:
        return channel_id, ChannelAnswer(400, "ChannelNotRegistered")
    return channel_id, None


def manage(
    request: Request, directory: Directory, channels: Channels, now: float, new_channel_id: Callable[[], str]
) -> ChannelAnswer:
    """Apple's answer to a channel management request; a create or delete changes ``channels``."""
    headers = request.headers
    method, path = headers.get(":method", ""), headers.get(":path", "").partition("?")[0]
    rest = path[len(MANAGEMENT_PREFIX) :] if path.startswith(MANAGEMENT_PREFIX) else ""
    bundle_id, _, resource = rest.partition("/")
    if not bundle_id or resource not in ("channels", "all-channels"):
        return ChannelAnswer(404, "BadPath")
    allowed = ("POST", "GET", "DELETE") if resource == "channels" else ("GET",)
    if method not in allowed:
        return ChannelAnswer(405, "MethodNotAllowed")
    if request.duplicate_headers:
        return ChannelAnswer(400, "DuplicateHeaders")
    refused = _authorized(request, directory, now, bundle_id)
    if refused is not None:
        return refused
    app_channels = channels.by_app.setdefault(bundle_id, {})

    if resource == "all-channels":
        channels.counts["listed"] += 1
        return ChannelAnswer(200, document={"channels": list(app_channels)})
    if method == "POST":
        try:
            document = orjson.loads(request.body) if request.body else None
        except orjson.JSONDecodeError:
            document = None
        if not isinstance(document, dict):
            return ChannelAnswer(400, "BadRequestPayload")
        policy = document.get("message-storage-policy")
        if isinstance(policy, bool) or policy not in STORAGE_POLICIES:
            return ChannelAnswer(400, "MissingChannelQueueSize")
        push_type = document.get("push-type")
        if push_type is None:
            return ChannelAnswer(400, "MissingPushType")
        if push_type != "LiveActivity":
            return ChannelAnswer(400, "InvalidPushType")
        if len(app_channels) >= MAX_CHANNELS:
            return ChannelAnswer(400, "CannotCreateChannelConfig")
        channel_id = new_channel_id()
        app_channels[channel_id] = Channel(int(policy), push_type)
        channels.counts["created"] += 1
        return ChannelAnswer(201, headers=(("apns-channel-id", channel_id),))

    channel_id, missing = _channel_of(headers, app_channels)
    if missing is not None:
        return missing
    if method == "DELETE":
        del app_channels[channel_id]
        channels.counts["deleted"] += 1
        return ChannelAnswer(204)
    channel = app_channels[channel_id]
    channels.counts["read"] += 1
    return ChannelAnswer(
        200, document={"message-storage-policy": channel.storage_policy, "push-type": channel.push_type}
    )


def broadcast(request: Request, directory: Directory, channels: Channels, now: float) -> ChannelAnswer:
    """Apple's answer to a broadcast (``POST /4/broadcasts/apps/<bundle id>``)."""
    headers = request.headers
    path = headers.get(":path", "").partition("?")[0]
    bundle_id = path[len(BROADCAST_PREFIX) :] if path.startswith(BROADCAST_PREFIX) else ""
    if not bundle_id or "/" in bundle_id:
        return ChannelAnswer(404, "BadPath")
    if headers.get(":method") != "POST":
        return ChannelAnswer(405, "MethodNotAllowed")
    if request.duplicate_headers:
        return ChannelAnswer(400, "DuplicateHeaders")
    refused = _authorized(request, directory, now, bundle_id)
    if refused is not None:
        return refused
    channel_id = headers.get("apns-channel-id")
    if not channel_id:
        return ChannelAnswer(400, "MissingChannelId")
    if not well_formed_channel_id(channel_id):
        return ChannelAnswer(400, "BadChannelId")
    push_type = headers.get("apns-push-type")
    if not push_type:
        return ChannelAnswer(400, "MissingPushType")
    if push_type != "liveactivity":
        return ChannelAnswer(400, "InvalidPushType")
    if headers.get("apns-priority", "10") not in PRIORITIES:
        return ChannelAnswer(400, "BadPriority")
    expiration = headers.get("apns-expiration", "0")
    if not expiration.isdigit():
        return ChannelAnswer(400, "BadExpirationDate")
    channel = channels.by_app.get(bundle_id, {}).get(channel_id)
    if channel is None:
        return ChannelAnswer(400, "ChannelNotRegistered")
    if channel.storage_policy == 0 and int(expiration) != 0:
        return ChannelAnswer(400, "BadExpirationDate")  # nothing is stored, so nothing can expire later
    body = request.body
    if not body:
        return ChannelAnswer(400, "PayloadEmpty")
    if len(body) > MAX_BROADCAST_PAYLOAD:
        return ChannelAnswer(413, "PayloadTooLarge")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ChannelAnswer(400, "BadPayload")
    if not isinstance(document, dict) or not isinstance(document.get("aps"), dict):
        return ChannelAnswer(400, "BadPayload")
    channels.counts["broadcasts"] += 1
    channels.broadcasts[channel_id] += 1
    return ChannelAnswer(200)
