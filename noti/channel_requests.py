"""The channel request protocol: how the gateway asks a sender of a credential to call APNs about channels.

The gateway pushes a :class:`ChannelRequest` onto the credential's ``channel_requests`` list
(:class:`noti.queue.StreamKeys`) and waits on ``channel_reply(id)``; a sender
(:mod:`noti.sender.channels`) carries it out and pushes the :class:`~noti.apns.channels.ChannelAnswer`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from noti.apns.channels import ChannelAnswer
from noti.queue import StreamKeys

OPERATIONS = frozenset({"create", "read", "list", "delete", "broadcast"})
REQUEST_SECONDS = 20.0  # how long a request may wait for a sender and for APNs, retries included
REPLY_TTL = 60  # seconds an unread answer is kept


@dataclass(frozen=True, slots=True)
class ChannelRequest:
    """One thing to ask APNs about a credential's channels."""

    op: str
    id: str
    deadline: float  # epoch seconds
    channel_id: str | None = None
    storage_policy: int | None = None
    payload: dict[str, Any] | None = None  # a broadcast's Live Activity payload
    priority: int = 10
    expiration: int = 0
    campaign: str | None = None  # "namespace/name" of a campaign's broadcast

    @classmethod
    def new(cls, op: str, seconds: float = REQUEST_SECONDS, **fields: Any) -> ChannelRequest:
        return cls(op=op, id=str(uuid.uuid4()), deadline=time.time() + seconds, **fields)

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def parse(cls, raw: bytes | str) -> ChannelRequest:
        """A request from its JSON; ValueError for anything else."""
        try:
            document = orjson.loads(raw)
            request = cls(**document)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"not a channel request: {exc}") from None
        if request.op not in OPERATIONS:
            raise ValueError(f"unknown channel operation {request.op!r}")
        return request


def encode_answer(answer: ChannelAnswer) -> bytes:
    return orjson.dumps(asdict(answer))


def parse_answer(raw: bytes | str) -> ChannelAnswer:
    return ChannelAnswer(**orjson.loads(raw))


async def ask(redis: aioredis.Redis, keys: StreamKeys, request: ChannelRequest) -> ChannelAnswer | None:
    """Hand ``request`` to a sender of the credential and wait for its answer; None when none came in time."""
    reply = keys.channel_reply(request.id)
    await redis.lpush(keys.channel_requests, request.encode())
    # A little past the deadline, a second at a time: a sender may start the request just before its
    # deadline, and a blocking read longer than the client's socket timeout would look like a dead Redis.
    give_up = request.deadline + 2
    while True:
        answered = await redis.blpop([reply], timeout=1)
        if answered:
            break
        if time.time() >= give_up:
            return None
    return parse_answer(answered[1])
