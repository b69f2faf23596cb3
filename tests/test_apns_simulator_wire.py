"""The simulator's HTTP/2 server framing against an independent HTTP/2 client (jh2's state machine), in memory."""

from __future__ import annotations

import struct

import pytest
from jh2._hazmat import Decoder
from jh2.config import H2Configuration
from jh2.connection import H2Connection
from jh2.errors import ErrorCodes
from jh2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingAckReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    SettingsAcknowledged,
    StreamEnded,
)
from jh2.settings import SettingCodes

from noti.apns.simulator.wire import HEADERS, PREFACE, ServerConnection, encode_headers, frame, malformed

REQUEST = [(":method", "POST"), (":scheme", "https"), (":path", "/3/device/" + "ab" * 32), (":authority", "apns")]


class Pair:
    """A jh2 client and our server, passing bytes both ways; the server answers as ``answer`` says."""

    def __init__(self, max_streams: int = 1000, answer: bytes | None = b"", hold: bool = False) -> None:
        self.requests: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = []
        self.answer, self.hold = answer, hold
        self.server = ServerConnection(self._on_request, max_streams)
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.server.start()
        self.client.initiate_connection()
        self.events: list[Event] = []
        self.pump()

    def _on_request(self, stream_id: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.requests.append((stream_id, headers, body))
        if not self.hold and self.answer is not None:
            self.server.respond(stream_id, [(b":status", b"200" if not self.answer else b"400")], self.answer)

    def pump(self) -> list[Event]:
        """Exchange bytes until both sides are quiet; the client's events."""
        events: list[Event] = []
        while True:
            to_server, to_client = self.client.data_to_send(), self.server.take()
            if not to_server and not to_client:
                break
            if to_server:
                self.server.receive(to_server)
            if to_client:
                events += self.client.receive_data(to_client)
        self.events += events
        return events

    def send(self, body: bytes = b'{"aps":{}}', extra: list[tuple[str, str]] | None = None) -> int:
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, REQUEST + (extra or []))
        self.client.send_data(stream_id, body, end_stream=True)
        return stream_id


def test_settings_are_exchanged_and_acknowledged() -> None:
    pair = Pair(max_streams=7)
    changed = [event for event in pair.events if isinstance(event, RemoteSettingsChanged)]
    assert changed and changed[0].changed_settings[SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 7
    assert any(isinstance(event, SettingsAcknowledged) for event in pair.events)


def test_a_request_is_decoded_and_answered_on_its_stream() -> None:
    pair = Pair()
    stream_id = pair.send(extra=[("apns-topic", "com.example.app")])
    events = pair.pump()
    assert pair.requests == [(stream_id, [(n.encode(), v.encode()) for n, v in REQUEST] +
                              [(b"apns-topic", b"com.example.app")], b'{"aps":{}}')]  # fmt: skip
    response = next(event for event in events if isinstance(event, ResponseReceived))
    assert (response.stream_id, dict(response.headers)[":status"]) == (stream_id, "200")
    assert any(isinstance(event, StreamEnded) and event.stream_id == stream_id for event in events)
    assert pair.server.streams == {}


def test_error_bodies_wait_for_flow_control_window() -> None:
    body = b'{"reason":"BadDeviceToken"}'
    pair = Pair(answer=body)
    pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 10})  # smaller than one error body
    pair.pump()
    stream_id = pair.send()
    events = pair.pump()
    assert not any(isinstance(event, DataReceived) for event in events)  # headers only, body held back
    pair.client.increment_flow_control_window(100, stream_id=stream_id)
    events = pair.pump()
    data = [event for event in events if isinstance(event, DataReceived)]
    assert [event.data for event in data] == [body]
    assert any(isinstance(event, StreamEnded) for event in events)


def test_thousands_of_answers_keep_within_the_connection_window() -> None:
    body = b'{"reason":"BadDeviceToken"}' + b" " * 100
    pair = Pair(answer=body)
    received = 0
    for _ in range(200):
        for _ in range(10):
            pair.send(body=b"x" * 1000)  # 2 MB sent: the server must refill our window as it goes
        for event in pair.pump():
            if isinstance(event, DataReceived):
                received += 1
                pair.client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    assert received == 2000 and len(pair.requests) == 2000


def test_ping_is_answered() -> None:
    pair = Pair()
    pair.client.ping(b"12345678")
    assert any(isinstance(event, PingAckReceived) and event.ping_data == b"12345678" for event in pair.pump())


def test_a_header_block_split_over_continuation_frames_is_one_request() -> None:
    pair = Pair()
    pair.client.max_outbound_frame_size = 16_384
    big = [("x-big", "v" * 20_000)]  # larger than one frame: jh2 sends HEADERS + CONTINUATION
    pair.server._decoder.max_header_list_size = 1 << 20
    stream_id = pair.send(extra=big)
    pair.pump()
    assert [request[0] for request in pair.requests] == [stream_id]
    assert (b"x-big", b"v" * 20_000) in pair.requests[0][1]


def _frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each frame in ``data``."""
    frames, offset = [], 0
    while offset < len(data):
        high, low, kind, flags, stream_id = struct.unpack_from(">BHBBL", data, offset)
        length = (high << 16) | low
        frames.append((kind, flags, stream_id, data[offset + 9 : offset + 9 + length]))
        offset += 9 + length
    return frames


def test_streams_beyond_the_limit_are_refused() -> None:
    pair = Pair(max_streams=2, hold=True)
    for _ in range(2):
        pair.client.send_headers(pair.client.get_next_available_stream_id(), REQUEST)  # held open
    pair.pump()
    # A third, which jh2 itself would refuse to open: :method POST, :scheme https, :path / (static table).
    pair.server.receive(frame(HEADERS, 0x4, 5, b"\x83\x87\x84"))
    assert (0x3, 0, 5, struct.pack(">L", ErrorCodes.REFUSED_STREAM)) in _frames(pair.server.take())
    assert sorted(pair.server.streams) == [1, 3]


def test_a_stream_reset_by_the_client_is_not_answered() -> None:
    pair = Pair(hold=True)
    stream_id = pair.send()
    pair.pump()
    pair.client.reset_stream(stream_id)
    pair.pump()
    pair.server.respond(stream_id, [(b":status", b"200")])
    assert pair.server.take() == b""


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (frame(HEADERS, 0x5, 2, b"\x88"), "an even stream id"),
        (frame(HEADERS, 0x5, 0, b"\x88"), "stream 0"),
        (frame(0x4, 0, 0, b"\x00\x01"), "a partial setting"),
        (frame(0x6, 0, 0, b"123"), "a short PING"),
        (struct.pack(">BHBBL", 0, 20_000, 0, 0, 1) + b"\x00" * 20_000, "a frame over 16 KiB"),
    ],
)
def test_protocol_errors_end_the_connection_with_goaway(raw: bytes, why: str) -> None:
    pair = Pair()
    pair.server.receive(raw)
    events = pair.client.receive_data(pair.server.take())
    assert pair.server.closed, why
    assert any(isinstance(event, ConnectionTerminated) and event.error_code != 0 for event in events), why


def test_streams_must_open_in_order() -> None:
    pair = Pair()
    pair.send()
    pair.send()
    pair.pump()
    pair.server.receive(frame(HEADERS, 0x5, 1, b"\x88"))
    assert pair.server.closed


def test_a_client_that_allows_no_header_table_is_told_so_first() -> None:
    server = ServerConnection(lambda stream_id, headers, body: server.respond(stream_id, [(b":status", b"200")]), 10)
    server.start()
    server.receive(PREFACE + frame(0x4, 0, 0, struct.pack(">HL", 0x1, 0)))  # SETTINGS_HEADER_TABLE_SIZE = 0
    server.take()
    for stream_id in (1, 3):
        server.receive(frame(HEADERS, 0x5, stream_id, b"\x83\x87\x84"))
    blocks = [payload for kind, _flags, _stream, payload in _frames(server.take()) if kind == HEADERS]
    decoder = Decoder()
    decoder.max_allowed_table_size = 0
    assert [decoder.decode(block, True) for block in blocks] == [[(b":status", b"200", False)]] * 2
    assert blocks[0].startswith(b"\x20")  # a dynamic table size update to 0 opens the first block


def test_the_clients_goaway_closes_the_connection() -> None:
    pair = Pair()
    pair.client.close_connection()
    pair.pump()
    assert pair.server.closed


GOOD = [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/3/device/ab"), (b"apns-topic", b"a")]


@pytest.mark.parametrize(
    ("headers", "bad"),
    [
        (GOOD, False),
        ([*GOOD, (b"te", b"trailers")], False),
        ([*GOOD, (b"Apns-Topic", b"a")], True),
        ([*GOOD, (b":path", b"/")], True),
        ([*GOOD, (b":status", b"200")], True),
        ([GOOD[3], *GOOD[:3]], True),  # a pseudo-header after a regular one
        (GOOD[1:], True),  # no :method
        ([*GOOD, (b"connection", b"keep-alive")], True),
        ([*GOOD, (b"te", b"gzip")], True),
        ([*GOOD, (b"", b"x")], True),
        ([], True),
    ],
)
def test_malformed_requests_are_recognised(headers: list[tuple[bytes, bytes]], bad: bool) -> None:
    assert malformed(headers) is bad
    assert malformed(headers) is bad  # the cached verdict agrees


@pytest.mark.parametrize("status", [b"200", b"400", b"403", b"410", b"500", b"503"])
def test_answers_encode_to_hpack_any_decoder_reads(status: bytes) -> None:
    headers = [(b":status", status), (b"apns-id", b"x" * 36), (b"content-length", b"1" * 200)]
    decoder = Decoder()
    for announce in (True, False):
        assert decoder.decode(encode_headers(headers, announce), True) == [(*header, False) for header in headers]
