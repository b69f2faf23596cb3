"""The server side of HTTP/2 (RFC 9113) as APNs uses it: requests in, short answers out.

The simulator once ran on jh2's general state machine, which cost most of its CPU per request
(a stream object, a dozen events and frame objects each way). APNs traffic is narrow: a client
opens streams with one HEADERS (maybe CONTINUATION) and one or two DATA frames, and the server
answers with one HEADERS frame and, on errors, one small DATA frame. This module frames exactly
that over a byte buffer (jh2's Rust HPACK decoder in, a few-line HPACK encoder out) and keeps
what the protocol requires: SETTINGS and their ACK, PING, flow control both ways, RST_STREAM,
GOAWAY, stream id order, SETTINGS_MAX_CONCURRENT_STREAMS and frame size limits, malformed
requests refused (``malformed``), and connection errors for the rest.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jh2._hazmat import Decoder, HPACKError, OversizedHeaderListError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x5, 0x6
REFUSED_STREAM, COMPRESSION_ERROR = 0x7, 0x9
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE = 0x1, 0x3, 0x4
SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 0x5, 0x6
DEFAULT_WINDOW = 65_535
MAX_FRAME_SIZE = 16_384  # what we accept (the default; we do not raise it)
MAX_HEADER_LIST_SIZE = 65_536
MAX_BODY = 65_536  # bytes of a request body kept; APNs refuses anything over 5120 anyway
_HEADER = struct.Struct(">BHBBL")  # length as 1 + 2 bytes, type, flags, stream id
_U32 = struct.Struct(">L")
_WINDOW_REFILL = 32_768  # send WINDOW_UPDATE once this much was received


_PSEUDO_HEADERS = frozenset({b":method", b":scheme", b":path", b":authority"})
_REQUIRED_PSEUDO_HEADERS = frozenset({b":method", b":scheme", b":path"})
_CONNECTION_HEADERS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})


def _misshapen(names: tuple[bytes, ...]) -> bool:
    pseudo: set[bytes] = set()
    regular = False
    for name in names:
        if not name or name.lower() != name:
            return True
        if name[0] == 58:  # ":"
            if regular or name in pseudo or name not in _PSEUDO_HEADERS:
                return True
            pseudo.add(name)
        else:
            regular = True
            if name in _CONNECTION_HEADERS:
                return True
    return not pseudo >= _REQUIRED_PSEUDO_HEADERS


_SHAPES: dict[tuple[bytes, ...], bool] = {}  # a client sends the same header names in the same order every time


def malformed(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether a request's header block breaks HTTP/2's rules (RFC 9113 §8.2, §8.3), so the stream is reset.

    jh2's checks at a fraction of the cost: names non-empty and lower-case, pseudo-headers known,
    once each and first, the three a request needs, no connection-specific header, ``te`` only
    ``trailers``. Values with surrounding whitespace are left to judge, which refuses those it reads.
    """
    if not headers:
        return True
    names: tuple[bytes, ...]
    values: tuple[bytes, ...]
    names, values = zip(*headers, strict=True)
    misshapen = _SHAPES.get(names)
    if misshapen is None:
        misshapen = _misshapen(names)
        if len(_SHAPES) < 1024:
            _SHAPES[names] = misshapen
    if misshapen:
        return True
    return b"te" in names and values[names.index(b"te")] != b"trailers"


class ConnectionError_(Exception):
    """A connection error (RFC 9113 §5.4.1): GOAWAY with ``code``, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One serialized frame."""
    length = len(payload)
    return _HEADER.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id) + payload


@dataclass(slots=True)
class Stream:
    """A request being received: its header block, its body, and the windows of its answer."""

    block: bytes | None  # the header block so far, until END_HEADERS; then None
    headers: list[tuple[bytes, bytes]] | None = None
    body: bytes = b""
    ended: bool = False  # the client's END_STREAM arrived
    received: int = 0  # body bytes not yet refilled with a stream WINDOW_UPDATE
    send_window: int = DEFAULT_WINDOW


class ServerConnection:
    """One HTTP/2 server connection: bytes in via ``receive``, bytes out in ``out``.

    ``on_request(stream_id, headers, body)`` runs once per complete request (headers as bytes
    pairs, in order); answer it with ``respond``. ``closed`` turns true when the client ends the
    connection (GOAWAY) or breaks the protocol (our GOAWAY is then in ``out``): write, then close.
    """

    def __init__(
        self, on_request: Callable[[int, list[tuple[bytes, bytes]], bytes], None], max_concurrent_streams: int
    ) -> None:
        self.on_request = on_request
        self.max_concurrent_streams = max_concurrent_streams
        self.out = bytearray()
        self.streams: dict[int, Stream] = {}  # open: being received, or waiting for their answer
        self.highest_stream_id = 0
        self.closed = False
        self._buffer = b""
        self._preface = False
        self._continuing: int | None = None  # the stream whose header block continues
        self._decoder = Decoder()
        self._decoder.max_header_list_size = MAX_HEADER_LIST_SIZE
        self._decoder.max_allowed_table_size = 4096
        self._announce_table = True  # the next header block starts with "dynamic table size: 0"
        self._received = 0  # connection-level bytes not yet refilled
        self._send_window = DEFAULT_WINDOW  # connection-level, for our DATA
        self._initial_send_window = DEFAULT_WINDOW
        self._peer_max_frame = MAX_FRAME_SIZE
        self._pending: list[tuple[int, bytes]] = []  # error bodies waiting for window

    def start(self) -> None:
        """Our SETTINGS, the first thing a server sends."""
        self.out += frame(
            SETTINGS, 0, 0, struct.pack(">HL", SETTINGS_MAX_CONCURRENT_STREAMS, self.max_concurrent_streams)
        )

    # ------------------------------------------------------------------ receiving

    def receive(self, data: bytes) -> None:
        """Process bytes from the client; protocol errors end the connection (GOAWAY in ``out``)."""
        if self.closed:
            return
        buffer = self._buffer + data if self._buffer else data
        try:
            if not self._preface:
                if len(buffer) < len(PREFACE):
                    if not PREFACE.startswith(buffer):
                        raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    self._buffer = buffer
                    return
                if buffer[: len(PREFACE)] != PREFACE:
                    raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._preface = True
                buffer = buffer[len(PREFACE) :]
            view = memoryview(buffer)
            offset, size = 0, len(buffer)
            while size - offset >= 9:
                high, low, kind, flags, stream_id = _HEADER.unpack_from(view, offset)
                length = (high << 16) | low
                if length > MAX_FRAME_SIZE:
                    raise ConnectionError_(FRAME_SIZE_ERROR, f"a {length}-byte frame")
                end = offset + 9 + length
                if end > size:
                    break
                self._frame(kind, flags, stream_id & 0x7FFFFFFF, bytes(view[offset + 9 : end]))
                offset = end
                if self.closed:
                    return
            self._buffer = bytes(view[offset:]) if offset < size else b""
        except ConnectionError_ as error:
            self.goaway(error.code, self.highest_stream_id, str(error).encode())
            self.closed = True

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuing is not None and kind != CONTINUATION:
            raise ConnectionError_(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == CONTINUATION:
            if stream_id != self._continuing:
                raise ConnectionError_(PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
            stream = self.streams[stream_id]
            assert stream.block is not None
            stream.block += payload
            if flags & END_HEADERS:
                self._continuing = None
                self._header_block_done(stream_id, stream)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == PING:
            if len(payload) != 8 or stream_id:
                raise ConnectionError_(FRAME_SIZE_ERROR if len(payload) != 8 else PROTOCOL_ERROR, "bad PING")
            if not flags & ACK:
                self.out += frame(PING, ACK, 0, payload)
        elif kind == RST_STREAM:
            if not stream_id or len(payload) != 4:
                raise ConnectionError_(PROTOCOL_ERROR, "bad RST_STREAM")
            self.streams.pop(stream_id, None)
            self._pending = [(sid, body) for sid, body in self._pending if sid != stream_id]
        elif kind == GOAWAY:
            self.closed = True
        elif kind == PRIORITY:
            if not stream_id or len(payload) != 5:
                raise ConnectionError_(PROTOCOL_ERROR, "bad PRIORITY")
        elif kind == PUSH_PROMISE:
            raise ConnectionError_(PROTOCOL_ERROR, "a client cannot push")
        # Unknown frame types are ignored (RFC 9113 §4.1).

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            payload = _unpad(payload)
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers: they must end the stream
            if stream.ended or not flags & END_STREAM:
                raise ConnectionError_(PROTOCOL_ERROR, "HEADERS on a stream already sending")
            stream.block = payload
        else:
            if stream_id % 2 == 0 or stream_id <= self.highest_stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, f"stream {stream_id} opened out of order")
            self.highest_stream_id = stream_id
            stream = self.streams[stream_id] = Stream(payload, send_window=self._initial_send_window)
        if flags & END_STREAM:
            stream.ended = True
        if flags & END_HEADERS:
            self._header_block_done(stream_id, stream)
        else:
            self._continuing = stream_id

    def _header_block_done(self, stream_id: int, stream: Stream) -> None:
        block, stream.block = stream.block, None
        try:
            decoded = self._decoder.decode(block, True)
        except (HPACKError, OversizedHeaderListError) as error:
            raise ConnectionError_(COMPRESSION_ERROR, f"HPACK: {error}") from None
        if stream.headers is None:
            stream.headers = [(name, value) for name, value, _ in decoded]
            if len(self.streams) > self.max_concurrent_streams:
                self.reset(stream_id, REFUSED_STREAM)
                return
        if stream.ended:
            self._complete(stream_id, stream)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        flow = len(payload)  # padding counts against flow control too
        self._received += flow
        if self._received >= _WINDOW_REFILL:
            self.out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._received))
            self._received = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.ended or stream.headers is None:
            if not stream_id or stream_id > self.highest_stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            self.out += frame(RST_STREAM, 0, stream_id, _U32.pack(STREAM_CLOSED))
            return
        if flags & PADDED:
            payload = _unpad(payload)
        if len(stream.body) < MAX_BODY:
            stream.body += payload
        stream.received += flow
        if stream.received >= _WINDOW_REFILL and not flags & END_STREAM:
            self.out += frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(stream.received))
            stream.received = 0
        if flags & END_STREAM:
            stream.ended = True
            self._complete(stream_id, stream)

    def _complete(self, stream_id: int, stream: Stream) -> None:
        assert stream.headers is not None
        self.on_request(stream_id, stream.headers, stream.body)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS of a partial setting")
        for offset in range(0, len(payload), 6):
            code, value = struct.unpack_from(">HL", payload, offset)
            if code == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > 0x7FFFFFFF:
                    raise ConnectionError_(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE too large")
                delta, self._initial_send_window = value - self._initial_send_window, value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif code == SETTINGS_MAX_FRAME_SIZE:
                if not 16_384 <= value <= 16_777_215:
                    raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self._peer_max_frame = value
            elif code == SETTINGS_HEADER_TABLE_SIZE:
                self._announce_table = True
        self.out += frame(SETTINGS, ACK, 0)
        self._send_pending()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not increment:
            raise ConnectionError_(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
        if not stream_id:
            self._send_window += increment
            if self._send_window > 0x7FFFFFFF:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "connection window over 2^31-1")
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                return  # a closed stream: harmless
            stream.send_window += increment
        self._send_pending()

    # ------------------------------------------------------------------ sending

    def respond(self, stream_id: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
        """Answer a complete request: HEADERS (ending the stream unless ``body``), then DATA."""
        stream = self.streams.get(stream_id)
        if stream is None or self.closed:
            return  # reset by the client meanwhile
        block = encode_headers(headers, self._announce_table)
        self._announce_table = False
        if len(block) > self._peer_max_frame:
            raise ValueError("response header block larger than a frame")  # ours are a few dozen bytes
        if not body:
            self.out += frame(HEADERS, END_HEADERS | END_STREAM, stream_id, block)
            del self.streams[stream_id]
            return
        self.out += frame(HEADERS, END_HEADERS, stream_id, block)
        self._pending.append((stream_id, body))
        self._send_pending()

    def _send_pending(self) -> None:
        if not self._pending:
            return
        waiting = []
        for stream_id, body in self._pending:
            stream = self.streams.get(stream_id)
            if stream is None:
                continue
            if len(body) <= min(self._send_window, stream.send_window, self._peer_max_frame):
                self._send_window -= len(body)
                self.out += frame(DATA, END_STREAM, stream_id, body)
                del self.streams[stream_id]
            else:
                waiting.append((stream_id, body))  # our bodies are tiny: never split, wait for window
        self._pending = waiting

    def reset(self, stream_id: int, code: int) -> None:
        """Refuse one stream (RST_STREAM)."""
        self.streams.pop(stream_id, None)
        self.out += frame(RST_STREAM, 0, stream_id, _U32.pack(code))

    def goaway(self, code: int, last_stream_id: int, debug: bytes = b"") -> None:
        """Tell the client we process no stream above ``last_stream_id``."""
        self.out += frame(GOAWAY, 0, 0, _U32.pack(last_stream_id) + _U32.pack(code) + debug)

    def take(self) -> bytes:
        """What is to be written, emptied."""
        data = bytes(self.out)
        self.out.clear()
        return data


# HPACK (RFC 7541) for our answers, which never repeat a value worth indexing: static-table
# statuses, every other field a literal never added to the dynamic table (so ours stays empty,
# and no client setting can make it too large), no Huffman coding. Cheaper than a general encoder.
_STATUS_INDEX = {b"200": 8, b"204": 9, b"206": 10, b"304": 11, b"400": 12, b"404": 13, b"500": 14}
_TABLE_SIZE_ZERO = b"\x20"


def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_headers(headers: list[tuple[bytes, bytes]], announce_table_size: bool = False) -> bytes:
    """An HPACK header block of ``headers``; ``announce_table_size`` opens it with a table size update to 0."""
    block = bytearray(_TABLE_SIZE_ZERO if announce_table_size else b"")
    for name, value in headers:
        if name == b":status" and value in _STATUS_INDEX:
            block.append(0x80 | _STATUS_INDEX[value])
            continue
        if name == b":status":
            block += b"\x08"  # literal without indexing, name :status (static index 8)
        else:
            block += b"\x00" + _integer(len(name), 7) + name
        block += _integer(len(value), 7) + value
    return bytes(block)


def _unpad(payload: bytes) -> bytes:
    if not payload:
        raise ConnectionError_(PROTOCOL_ERROR, "padded frame without its pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ConnectionError_(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]
