"""The simulator's HTTP/2 side: one asyncio protocol per client connection, framed by ``wire``."""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
import secrets
import time
from typing import Any, cast

import orjson

from noti.apns.simulator import channels
from noti.apns.simulator.rules import Answer, Request, judge
from noti.apns.simulator.state import State
from noti.apns.simulator.wire import PROTOCOL_ERROR, ServerConnection, malformed

APPLE_MAX_CONCURRENT_STREAMS = 1000
_CONTENT_TYPE = (b"content-type", b"application/json")


class _Ids:
    """UUID-shaped ids (version 4 layout) that are unique per process: a random prefix and a counter.

    Apple's apns-id and apns-unique-id are UUIDs; uuid4() per response costs more than the rest of it.
    """

    def __init__(self) -> None:
        prefix = secrets.token_hex(10)
        self._prefix = f"{prefix[:8]}-{prefix[8:12]}-4{prefix[12:15]}-{'89ab'[int(prefix[15], 16) % 4]}{prefix[16:19]}-"
        self._counter = itertools.count(secrets.randbits(40))

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


new_id = _Ids()


def new_channel_id() -> str:
    """A channel id as APNs issues them: 16 random bytes, base64."""
    return base64.b64encode(secrets.token_bytes(channels.CHANNEL_ID_BYTES)).decode()


def certificate_topics(peercert: dict[str, Any] | None) -> tuple[str, ...]:
    """The bundle ids a provider certificate may push to: its subject's UID, as in Apple's certificates."""
    if not peercert:
        return ()
    return tuple(value for rdn in peercert.get("subject", ()) for name, value in rdn if name == "userId")


class APNsProtocol(asyncio.Protocol):
    """One client connection: HTTP/2 frames in, Apple's answers out."""

    def __init__(self, state: State, max_concurrent_streams: int, sandbox: bool = True, manage: bool = False) -> None:
        self.state = state
        self.manage = manage  # the channel management listener (Apple: its own host and port)
        self.h2 = ServerConnection(self._request, max_concurrent_streams)
        self.sandbox = sandbox  # the development environment also answers with apns-unique-id
        self.transport: asyncio.Transport | None = None
        self.served = 0
        self.closing = False
        self.cert_topics: tuple[str, ...] = ()
        self.team_id: str | None = None  # of the first provider token accepted on this connection
        self._counted: tuple[str, int] | None = None  # the provider token last counted, and when
        self._flush_scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.cert_topics = certificate_topics(self.transport.get_extra_info("peercert"))
        self.h2.start()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # after our GOAWAY: the client will resend what we did not process elsewhere
        self.h2.receive(data)
        self._flush()
        if self.h2.closed and self.transport is not None:
            self.transport.close()  # after a protocol error (our GOAWAY is out) or the client's GOAWAY

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is not None and self.h2.out and not self.transport.is_closing():
            self.transport.write(self.h2.take())

    def _flush_soon(self) -> None:
        """Write once per loop iteration: answers made together share one TLS record."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    def _request(self, stream_id: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self.closing:
            return
        if malformed(raw_headers):
            self.h2.reset(stream_id, PROTOCOL_ERROR)
            return
        try:
            headers = {name.decode(): value.decode() for name, value in raw_headers}
        except UnicodeDecodeError:
            self.h2.reset(stream_id, PROTOCOL_ERROR)
            return
        state = self.state
        faults = state.faults
        if faults.drop_rate and random.random() < faults.drop_rate:
            state.by_outcome["Dropped"] += 1
            self._abort()
            self.closing = True
            return
        now = time.time()
        if self.manage or headers.get(":path", "").startswith(channels.BROADCAST_PREFIX):
            request = Request(headers, body, self.cert_topics, None, len(headers) != len(raw_headers))
            self._channel_request(stream_id, request, now)
            return
        answer = judge(
            Request(headers, body, self.cert_topics, self.team_id, len(headers) != len(raw_headers)),
            state.directory,
            now,
        )
        if answer.team_id is not None:  # accepted by provider token
            self.team_id = answer.team_id
            authorization = headers["authorization"]
            if (authorization, state.resets) != self._counted:  # a client sends one token for many requests
                self._counted = (authorization, state.resets)
                state.provider_tokens.add(authorization[7:].strip())
            if faults.token_update_min_seconds and state.token_update_refused(answer.team_id, authorization, now):
                answer = Answer(429, "TooManyProviderTokenUpdates")
        if answer.status == 200 and (faults.rate_429 or faults.rate_500 or faults.rate_503):
            answer = faults.injected(random.random()) or answer
        state.by_outcome[answer.reason or "Success"] += 1
        if answer.event is not None and answer.status == 200:
            state.live_activities[f"{answer.event}/{headers.get('apns-priority', '10')}"] += 1
        state.count_token(headers.get(":path", "").rpartition("/")[2].lower())
        self.served += 1
        goaway = bool(faults.goaway_after) and self.served >= faults.goaway_after
        if goaway:
            self.closing = True
        delay = faults.latency_ms + (random.random() * faults.latency_jitter_ms if faults.latency_jitter_ms else 0.0)
        if delay > 0:
            asyncio.get_running_loop().call_later(
                delay / 1000, self._respond, stream_id, answer, headers.get("apns-id"), goaway, True
            )
        else:
            self._respond(stream_id, answer, headers.get("apns-id"), goaway, False)

    def _channel_request(self, stream_id: int, request: Request, now: float) -> None:
        """A channel management request or a broadcast: judged by ``channels``, answered with apns-request-id."""
        state = self.state
        if self.manage:
            answer = channels.manage(request, state.directory, state.channels, now, new_channel_id)
        else:
            answer = channels.broadcast(request, state.directory, state.channels, now)
            faults = state.faults
            if answer.status == 200 and (faults.rate_429 or faults.rate_500 or faults.rate_503):
                injected = faults.injected(random.random())
                if injected is not None:
                    answer = channels.ChannelAnswer(injected.status, injected.reason)
        if answer.reason is not None:
            state.channels.by_reason[answer.reason] += 1
        request_id = request.headers.get("apns-request-id") or new_id()
        response_headers = [(b":status", str(answer.status).encode()), (b"apns-request-id", request_id.encode())]
        response_headers.extend((name.encode(), value.encode()) for name, value in answer.headers)
        if answer.status == 200 and not self.manage and self.sandbox:
            response_headers.append((b"apns-unique-id", new_id().encode()))
        body = answer.body()
        if body:
            response_headers.append(_CONTENT_TYPE)
            response_headers.append((b"content-length", str(len(body)).encode()))
        self.h2.respond(stream_id, response_headers, body)
        self.served += 1

    def _respond(self, stream_id: int, answer: Answer, apns_id: str | None, goaway: bool, later: bool) -> None:
        if self.transport is None:
            return
        h2 = self.h2
        response_headers = [(b":status", _STATUS[answer.status]), (b"apns-id", (apns_id or new_id()).encode())]
        if answer.reason is None:
            if self.sandbox:  # what the Push Notifications Console looks a delivery up by
                response_headers.append((b"apns-unique-id", new_id().encode()))
            h2.respond(stream_id, response_headers)
        else:
            body = answer.body()
            response_headers.append(_CONTENT_TYPE)
            response_headers.append((b"content-length", str(len(body)).encode()))
            h2.respond(stream_id, response_headers, body)
        if goaway:
            # Like Apple's Shutdown: streams above stream_id were not processed and may be retried.
            h2.goaway(0, stream_id, orjson.dumps({"reason": self.state.faults.goaway_reason}))
            transport = self.transport
            asyncio.get_running_loop().call_later(0.05, transport.close)
        if later or goaway:
            self._flush_soon()  # otherwise data_received writes it


_STATUS = {status: str(status).encode() for status in (200, 400, 403, 404, 405, 410, 413, 429, 500, 503)}
