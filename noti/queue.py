"""The queue protocol shared by gateway, sender and operator: Redis key names and the message format.

Every key of one credential carries the hash tag ``{<namespace>/<name>}`` (the APNsCredential's
identity) so that, on a Redis Cluster, all of them live in one slot and Lua scripts may touch
several at once. Queues belong to one credential, never to a bundle id: two tenants with the
same app never read each other's traffic. Which credential serves an app in an environment is
a route (``noti.routes``), claimed by the operator and read by the gateway.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

import orjson

from noti.store.tables import FINAL_STATUSES

Environment = Literal["sandbox", "production"]
ENVIRONMENTS: tuple[Environment, ...] = get_args(Environment)

MESSAGE_VERSION = 1
_VERSION = str(MESSAGE_VERSION).encode()
CONSUMER_GROUP = "senders"
# XADD MAXLEN is never used: trimming a stream could drop messages nobody has sent yet.


# Kubernetes names: a namespace is a DNS label, an object's name a DNS subdomain.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def credential_problem(value: object) -> str | None:
    """Why ``value`` is not a credential identity ``<namespace>/<name>`` (Kubernetes names), or None."""
    if not isinstance(value, str) or value.count("/") != 1:
        return "a credential is namespace/name, such as noti/dev"
    namespace, name = value.split("/")
    if not _NAMESPACE.fullmatch(namespace):
        return f"{namespace!r} is no Kubernetes namespace (lower-case letters, digits and hyphens, at most 63)"
    if len(name) > 253 or not _NAME.fullmatch(name):
        return f"{name!r} is no Kubernetes name (lower-case letters, digits, hyphens and periods, at most 253)"
    return None


class MessageError(ValueError):
    """A stream entry that is not a notification this version understands."""


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """Where one credential's traffic lives: ``credential`` is its ``<namespace>/<name>``."""

    credential: str

    def __post_init__(self) -> None:
        problem = credential_problem(self.credential)
        if problem is not None:
            raise ValueError(problem)

    @property
    def tag(self) -> str:
        return f"{{{self.credential}}}"

    @property
    def transactional_stream(self) -> str:
        """Single sends from the gateway: always served before campaigns."""
        return f"noti:{self.tag}:tx"

    def campaign_stream(self, campaign: str) -> str:
        """One campaign's fan-out (``campaign`` is ``namespace/name``)."""
        return f"noti:{self.tag}:campaign:{campaign}"

    def campaign_chunks(self, campaign: str) -> str:
        """Hash of a campaign's queued fan-out chunks (start cursor → end cursor): each is queued once."""
        return f"noti:{self.tag}:campaign:{campaign}:chunks"

    @property
    def campaigns(self) -> str:
        """Set of campaign names with a stream this credential's senders should consume."""
        return f"noti:{self.tag}:campaigns"

    @property
    def retries(self) -> str:
        """Sorted set of messages waiting for a retry, scored by the epoch second they are due."""
        return f"noti:{self.tag}:retries"

    @property
    def dead_letters(self) -> str:
        """Stream of entries no sender could read (kept for a person to look at, never dropped)."""
        return f"noti:{self.tag}:dead"

    @property
    def rate_limit(self) -> str:
        """Token bucket shared by every sender of the credential."""
        return f"noti:{self.tag}:rate"

    def campaign_rate_limit(self, campaign: str) -> str:
        return f"noti:{self.tag}:rate:campaign:{campaign}"

    @property
    def finished(self) -> str:
        """Counter of the notifications its senders finished (acked): the operator's measure of drain rate."""
        return f"noti:{self.tag}:finished"

    @property
    def status(self) -> str:
        """Hash the senders publish the credential's health to (e.g. a credential failure)."""
        return f"noti:{self.tag}:status"

    @property
    def channel_requests(self) -> str:
        """List of channel management requests and broadcasts for a sender to carry out (noti.sender.channels)."""
        return f"noti:{self.tag}:channel-requests"

    def channel_reply(self, request_id: str) -> str:
        """List a sender pushes its answer to one channel request onto (it expires soon after)."""
        return f"noti:{self.tag}:channel-reply:{request_id}"


ROUTES = "noti:routes"
"""Hash of which credential serves an app in an environment: ``<environment>:<bundle id>`` →
``<namespace>/<name> <Apple identity>`` (see ``noti.routes``)."""


def provider_token(team_id: str, key_id: str, fingerprint: str) -> str:
    """The ES256 provider token shared by every process signing as one Apple identity.

    Keyed by the identity (team id, key id, SHA-256 of the public key), not by app: after a
    rotation or a key id fix the new identity never finds the old one's token.
    """
    return f"noti:provider-token:{{{team_id}:{key_id}}}:{fingerprint}"


def campaign_counters(campaign: str) -> str:
    """Hash of a campaign's progress: total, queued, and a count per final status (read it with CampaignProgress)."""
    return f"noti:campaign:{{{campaign}}}:counters"


@dataclass(frozen=True, slots=True)
class CampaignProgress:
    """A campaign's progress: records written (total) and queued, from its counters hash in
    Redis, and finished by final status, from the store (``records.campaign_counts``), which
    counts each record once, in the transaction that makes it final."""

    total: int
    queued: int
    by_status: dict[str, int]

    @classmethod
    def parse(cls, counters: Mapping[Any, Any], finished: Mapping[str, int]) -> CampaignProgress:
        values = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in counters.items()}
        return cls(
            total=values.get("total", 0),
            queued=values.get("queued", 0),
            by_status={status.value: finished.get(status.value, 0) for status in FINAL_STATUSES},
        )

    @property
    def finished(self) -> int:
        return sum(self.by_status.values())


def campaign_settings(campaign: str) -> str:
    """Hash of what senders must honour for a campaign: ``rate`` (per second, 0 = unlimited), ``suspend`` (0/1)."""
    return f"noti:campaign:{{{campaign}}}:settings"


def campaign_fanout_cursor(campaign: str) -> str:
    """Where the operator's chunked fan-out resumes after a restart."""
    return f"noti:campaign:{{{campaign}}}:fanout"


def api_key_rate_limit(prefix: str) -> str:
    return f"noti:apikey:{prefix}:rate"


def admin_session(session_id: str) -> str:
    """An admin UI session: the id of the API key that logged in; gone after logout or expiry."""
    return f"noti:admin:session:{session_id}"


@dataclass(frozen=True, slots=True)
class QueuedNotification:
    """One notification on a stream: enough to send it and to write its record."""

    id: uuid.UUID
    device_token: str
    app: str
    content: dict[str, Any]  # noti.apns.payload.NotificationContent.to_dict()
    device_id: int | None = None
    campaign: str | None = None
    attempt: int = 0  # delivery attempts already made
    # When it was first queued, ms since the epoch. Optional: a first entry's stream id tells it
    # (Redis stamps it), so only a retry's entry, queued again later, carries it.
    queued_at: int | None = None
    # The sending request's trace context (W3C traceparent/tracestate, noti.tracing), when traced.
    trace: dict[str, str] | None = None
    # Its record's created_at, ms since the epoch (``epoch_ms``): lets the sender's updates by id reach
    # one partition of the records. Optional: a message without it (an older writer's) is still recorded.
    created_at: int | None = None

    def encode(self) -> dict[str, bytes]:
        """The stream entry fields for XADD."""
        body: dict[str, Any] = {
            "id": str(self.id),
            "token": self.device_token,
            "app": self.app,
            "content": self.content,
            "attempt": self.attempt,
        }
        if self.device_id is not None:
            body["device_id"] = self.device_id
        if self.campaign is not None:
            body["campaign"] = self.campaign
        if self.queued_at is not None:
            body["queued_at"] = self.queued_at
        if self.trace:
            body["trace"] = self.trace
        if self.created_at is not None:
            body["created_at"] = self.created_at
        return {"v": _VERSION, "n": orjson.dumps(body)}

    @staticmethod
    def encode_many(
        ids: Sequence[uuid.UUID | str],
        device_tokens: Sequence[str],
        device_ids: Sequence[int | None],
        *,
        app: str,
        content: dict[str, Any],
        campaign: str | None = None,
        trace: dict[str, str] | None = None,
        created_at: int | Sequence[int | None] | None = None,
    ) -> list[dict[str, bytes]]:
        """What :meth:`encode` gives for each of many first attempts sharing one content.

        The content is serialized once rather than per message (a bulk send's 10,000). ``created_at``
        is the records' (one for all, or one per id; None where unknown).
        """
        shared = orjson.Fragment(orjson.dumps(content))
        created = [created_at] * len(ids) if created_at is None or isinstance(created_at, int) else created_at
        entries = []
        for id, token, device_id, created_ms in zip(ids, device_tokens, device_ids, created, strict=True):
            body: dict[str, Any] = {"id": str(id), "token": token, "app": app, "content": shared, "attempt": 0}
            if device_id is not None:
                body["device_id"] = device_id
            if campaign is not None:
                body["campaign"] = campaign
            if trace:
                body["trace"] = trace
            if created_ms is not None:
                body["created_at"] = created_ms
            entries.append({"v": _VERSION, "n": orjson.dumps(body)})
        return entries

    @classmethod
    def decode(cls, fields: dict[bytes, bytes] | dict[str, Any]) -> QueuedNotification:
        """Parse a stream entry; raises MessageError for anything malformed or of another version."""
        normalized = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
        version = normalized.get("v")
        if isinstance(version, bytes):
            version = version.decode()
        if str(version) != str(MESSAGE_VERSION):
            raise MessageError(f"unsupported message version {version!r} (this sender reads {MESSAGE_VERSION})")
        try:
            body = orjson.loads(normalized["n"])
            return cls(
                id=uuid.UUID(body["id"]),
                device_token=body["token"],
                app=body["app"],
                content=body["content"],
                device_id=body.get("device_id"),
                campaign=body.get("campaign"),
                attempt=int(body.get("attempt", 0)),
                queued_at=int(body["queued_at"]) if body.get("queued_at") is not None else None,
                trace=_trace(body.get("trace")),
                created_at=int(body["created_at"]) if body.get("created_at") is not None else None,
            )
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            raise MessageError(f"malformed notification message: {exc}") from None

    def next_attempt(self, entry_id: bytes | str | None = None) -> QueuedNotification:
        """The message of the next attempt, still dated when it was first queued (``entry_id``: this one's)."""
        return replace(self, attempt=self.attempt + 1, queued_at=self.queued_since(entry_id))

    def queued_since(self, entry_id: bytes | str | None) -> int | None:
        """When it was first queued (ms since the epoch): its own date, else its stream entry ``entry_id``'s."""
        if self.queued_at is not None or entry_id is None:
            return self.queued_at
        return entry_time(entry_id)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """``moment`` as whole ms since the epoch, rounded down: a record's created_at in a message.

    A naive ``moment`` is UTC (SQLite gives stored times back without their zone)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS


def from_epoch_ms(ms: int) -> datetime:
    """The start of the ms ``ms`` (since the epoch) as an aware UTC datetime."""
    return _EPOCH + ms * _MS


def _trace(value: Any) -> dict[str, str] | None:
    """A message's trace context, when it carries a well-formed one (tracing is never a reason to drop a send)."""
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    return None


def entry_time(entry_id: bytes | str) -> int | None:
    """The ms since the epoch at which Redis added a stream entry, from its id (``<ms>-<seq>``)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    milliseconds, _, _ = text.partition("-")
    return int(milliseconds) if milliseconds.isdigit() else None


# The Lua that XADDs every entry packed in the variable ``packed`` onto KEYS[1], counting them in ``n``:
# per entry the number of fields, then each name and value, every item written as "<byte length>:<bytes>".
_XADD_PACKED = """
local pos = 1
local n = 0
local function item()
  local colon = string.find(packed, ':', pos, true)
  local size = tonumber(string.sub(packed, pos, colon - 1))
  local value = string.sub(packed, colon + 1, colon + size)
  pos = colon + size + 1
  return value
end
while pos <= #packed do
  local fields = {}
  for i = 1, 2 * tonumber(item()) do
    fields[i] = item()
  end
  redis.call('XADD', KEYS[1], '*', unpack(fields))
  n = n + 1
end
"""

# XADD many entries to KEYS[1] in one call, ARGV[1] packed as above: one packed argument instead of
# thousands keeps the client from packing each entry as a command. Answers how many were added.
XADD_MANY = "local packed = ARGV[1]" + _XADD_PACKED + "return n\n"

# One fan-out chunk onto a campaign's stream, at most once: KEYS[1] the stream, KEYS[2] its chunks hash
# (same hash tag); ARGV[1] the chunk's start cursor, ARGV[2] its end, ARGV[3] its entries (pack_entries).
# A chunk already queued (a second operator, a resumed run) adds nothing and answers the end it had,
# so the caller goes on from there. Answers {entries added, end cursor}.
XADD_CHUNK = (
    """
local queued = redis.call('HGET', KEYS[2], ARGV[1])
if queued then
  return {0, queued}
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local packed = ARGV[3]"""
    + _XADD_PACKED
    + "return {n, ARGV[2]}\n"
)


def _packed(item: bytes) -> bytes:
    return b"%d:%b" % (len(item), item)


def pack_entries(messages: Sequence[dict[str, bytes]]) -> bytes:
    """Stream entries (``QueuedNotification.encode()``) in the form ``XADD_MANY`` reads."""
    parts: list[bytes] = []
    names: dict[str, bytes] = {}
    for fields in messages:
        parts.append(_packed(b"%d" % len(fields)))
        for name, value in fields.items():
            packed_name = names.get(name) or names.setdefault(name, _packed(name.encode()))
            parts.append(packed_name)
            parts.append(b"%d:%b" % (len(value), value))
    return b"".join(parts)
