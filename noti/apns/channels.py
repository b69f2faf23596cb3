"""Broadcast channels: Apple's channel management API and broadcast sends, with a credential's provider token.

As Apple documents them ("Sending channel management requests to APNs", "Sending broadcast push
notification requests to APNs"):

- channel management is its own host and port per environment (:data:`MANAGEMENT_ENDPOINTS`):
  ``POST /1/apps/<bundle id>/channels`` with ``{"message-storage-policy": 0|1, "push-type":
  "LiveActivity"}`` creates a channel (201, its id in ``apns-channel-id``); ``GET`` and ``DELETE``
  of the same path with the ``apns-channel-id`` header read (200, the channel's settings) and
  delete it (204); ``GET /1/apps/<bundle id>/all-channels`` lists the ids (200 ``{"channels": [...]}``).
  Every answer carries ``apns-request-id``: the request's own, or one APNs made up.
- a broadcast goes to the ordinary push host: ``POST /4/broadcasts/apps/<bundle id>`` with
  ``apns-channel-id`` and ``apns-push-type: liveactivity``, a Live Activity payload of at most
  :data:`MAX_BROADCAST_PAYLOAD` bytes.
- an app keeps at most 10,000 channels per environment (``CannotCreateChannelConfig`` past that).

Nothing here raises for what APNs answers or for a lost connection: the answer says it.
"""

from __future__ import annotations

import enum
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from noti.apns.client import ENDPOINTS, client_ssl_context
from noti.apns.tokens import ProviderTokens
from noti.apns.transport import H2Transport

MANAGEMENT_ENDPOINTS = {
    "production": "https://api-manage-broadcast.push.apple.com:2196",
    "sandbox": "https://api-manage-broadcast.sandbox.push.apple.com:2195",
}
CHANNEL_PUSH_TYPE = "LiveActivity"  # the only kind of channel Apple offers
BROADCAST_PUSH_TYPE = "liveactivity"
MAX_BROADCAST_PAYLOAD = 5120
MAX_CHANNELS = 10_000  # per app and environment
PRIORITIES = (10, 5, 1)


class StoragePolicy(enum.IntEnum):
    """``message-storage-policy``: what APNs keeps for a device that is offline when a broadcast goes out."""

    NO_STORAGE = 0  # nothing: only devices online then get it (a larger budget of updates)
    MOST_RECENT = 1  # the most recent message, delivered when the device comes back


# Reasons of the channel and broadcast APIs beyond those of device pushes, with what to do about them.
CHANNEL_REASONS: dict[str, str] = {
    "BadChannelId": "the channel id is not one APNs issued",
    "ChannelNotRegistered": "no such channel for this app and environment (deleted, or never created)",
    "MissingChannelId": "the request named no channel (apns-channel-id)",
    "CannotCreateChannelConfig": f"the app already has {MAX_CHANNELS:,} channels in this environment: delete some",
    "FeatureNotEnabled": "broadcast is not enabled for this app: turn on the Broadcast capability of its App ID",
    "MissingPushType": "apns-push-type is required (liveactivity)",
    "InvalidPushType": "a broadcast's apns-push-type must be liveactivity",
    # Apple's answer to a create whose message-storage-policy is missing or not 0 or 1 (undocumented).
    "MissingChannelQueueSize": "message-storage-policy must be 0 (no storage) or 1 (most recent message)",
    "BadRequestPayload": "the request body is not what the channel API takes",
    "BadExpirationDate": "apns-expiration is invalid (a channel without storage takes only 0)",
    "BadPriority": "apns-priority must be 10, 5 or 1",
    "PayloadTooLarge": f"a broadcast payload is at most {MAX_BROADCAST_PAYLOAD} bytes",
    "PayloadEmpty": "the payload is empty",
    "BadPayload": "the payload is not a JSON object with an aps dictionary",
    "TopicMismatch": "the bundle id of the path is not the credential's",
    "TopicDisallowed": "this credential may not manage channels of that app",
    "BadPath": "the request path is wrong",
    "MethodNotAllowed": "the method is not allowed on that path",
}
RETRYABLE_STATUSES = frozenset({0, 429, 500, 503})


def management_endpoint(environment: str, override: str | None = None) -> str:
    """The channel management origin of ``environment`` (Apple's, unless overridden, e.g. by the simulator)."""
    if override:
        return override.rstrip("/")
    if environment not in MANAGEMENT_ENDPOINTS:
        raise ValueError(f"environment must be sandbox or production, not {environment!r}")
    return MANAGEMENT_ENDPOINTS[environment]


@dataclass(frozen=True, slots=True)
class ChannelAnswer:
    """What APNs answered one channel request or broadcast."""

    status: int  # 0: no answer (connection error)
    reason: str | None = None
    request_id: str | None = None  # apns-request-id
    channel_id: str | None = None  # apns-channel-id (a create's new channel)
    storage_policy: int | None = None  # a read's message-storage-policy
    push_type: str | None = None  # a read's push-type
    channels: list[str] = field(default_factory=list)  # a list's channel ids
    apns_unique_id: str | None = None  # a broadcast's apns-unique-id (sandbox)
    latency: float = 0.0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (APNs busy or unreachable)."""
        return self.status in RETRYABLE_STATUSES

    @property
    def missing(self) -> bool:
        """Whether APNs says the channel does not exist (so a delete has nothing left to do)."""
        return self.reason in ("ChannelNotRegistered", "BadChannelId")

    def describe(self) -> str:
        """One line for a person: the status, Apple's reason and what it means."""
        if self.ok:
            return f"APNs answered {self.status}"
        if self.status == 0:
            return f"APNs could not be reached ({self.reason})"
        meaning = CHANNEL_REASONS.get(self.reason or "")
        return f"APNs answered {self.status} {self.reason}" + (f": {meaning}" if meaning else "")


def broadcast_headers(
    channel_id: str, *, priority: int = 10, expiration: int = 0, apns_id: str | None = None
) -> dict[str, str]:
    """The headers of a broadcast: the channel, push type liveactivity, priority and expiration."""
    headers = {
        "apns-channel-id": channel_id,
        "apns-push-type": BROADCAST_PUSH_TYPE,
        "apns-priority": str(priority),
        "apns-expiration": str(expiration),
    }
    if apns_id is not None:
        headers["apns-request-id"] = apns_id
    return headers


class ChannelClient:
    """Channel management and broadcasts for one app in one environment, signed with one credential."""

    def __init__(
        self,
        bundle_id: str,
        *,
        environment: str = "production",
        tokens: ProviderTokens | None = None,
        management_url: str | None = None,
        push_url: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 15.0,
        proxy: str | None = None,
    ) -> None:
        if environment not in ENDPOINTS:
            raise ValueError(f"environment must be sandbox or production, not {environment!r}")
        self.bundle_id = bundle_id
        self.environment = environment
        self.tokens = tokens
        context = ssl_context or client_ssl_context()
        # Two origins, two connection pools: management is another host and port than pushes.
        self._manage = httpx.AsyncClient(
            base_url=management_endpoint(environment, management_url),
            transport=H2Transport(context, connections=1, proxy=proxy),
            timeout=timeout,
        )
        self._push = httpx.AsyncClient(
            base_url=(push_url or ENDPOINTS[environment]).rstrip("/"),
            transport=H2Transport(context, connections=1, proxy=proxy),
            timeout=timeout,
        )

    @property
    def channels_path(self) -> str:
        return f"/1/apps/{self.bundle_id}/channels"

    async def create(self, storage_policy: int) -> ChannelAnswer:
        """Create a channel; its id is the answer's ``channel_id``."""
        body = orjson.dumps({"message-storage-policy": int(storage_policy), "push-type": CHANNEL_PUSH_TYPE})
        return await self._request(self._manage, "POST", self.channels_path, {"content-type": "application/json"}, body)

    async def read(self, channel_id: str) -> ChannelAnswer:
        """A channel's settings (``storage_policy``, ``push_type``)."""
        return await self._request(self._manage, "GET", self.channels_path, {"apns-channel-id": channel_id})

    async def list(self) -> ChannelAnswer:
        """Every channel id of the app in this environment (``channels``)."""
        return await self._request(self._manage, "GET", f"/1/apps/{self.bundle_id}/all-channels", {})

    async def delete(self, channel_id: str) -> ChannelAnswer:
        """Delete a channel (204); ``ChannelNotRegistered`` when it is already gone."""
        return await self._request(self._manage, "DELETE", self.channels_path, {"apns-channel-id": channel_id})

    async def broadcast(
        self, channel_id: str, payload: bytes, *, priority: int = 10, expiration: int = 0,
        request_id: str | uuid.UUID | None = None,
    ) -> ChannelAnswer:  # fmt: skip
        """Send one Live Activity payload to every device subscribed to ``channel_id``."""
        headers = broadcast_headers(
            channel_id, priority=priority, expiration=expiration, apns_id=str(request_id) if request_id else None
        )
        headers["content-type"] = "application/json"
        return await self._request(self._push, "POST", f"/4/broadcasts/apps/{self.bundle_id}", headers, payload)

    async def _request(
        self, http: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> ChannelAnswer:
        started = time.perf_counter()
        refreshed = False
        while True:
            token = await self.tokens.current() if self.tokens is not None else None
            sent = dict(headers)
            if token is not None:
                sent["authorization"] = f"bearer {token}"
            try:
                response = await http.request(method, path, headers=sent, content=body or None)
            except (httpx.TransportError, OSError) as exc:
                return ChannelAnswer(0, getattr(exc, "reason", None) or type(exc).__name__,
                                     latency=time.perf_counter() - started)  # fmt: skip
            answer = _answer(response, time.perf_counter() - started)
            if answer.reason == "ExpiredProviderToken" and token is not None and not refreshed:
                assert self.tokens is not None
                await self.tokens.refresh(token)
                refreshed = True
                continue
            return answer

    async def aclose(self) -> None:
        await self._manage.aclose()
        await self._push.aclose()


def _answer(response: httpx.Response, latency: float) -> ChannelAnswer:
    document: Any = {}
    if response.content:
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            document = {}
    if not isinstance(document, dict):
        document = {}
    ok = 200 <= response.status_code < 300
    channels = document.get("channels") if ok else None
    policy = document.get("message-storage-policy") if ok else None
    return ChannelAnswer(
        status=response.status_code,
        reason=None if ok else (document.get("reason") if isinstance(document.get("reason"), str) else None),
        request_id=response.headers.get("apns-request-id"),
        channel_id=response.headers.get("apns-channel-id"),
        storage_policy=policy if isinstance(policy, int) else None,
        push_type=document.get("push-type") if ok and isinstance(document.get("push-type"), str) else None,
        channels=[c for c in channels if isinstance(c, str)] if isinstance(channels, list) else [],
        apns_unique_id=response.headers.get("apns-unique-id"),
        latency=latency,
    )
