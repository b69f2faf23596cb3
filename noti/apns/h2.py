"""What our HTTP/2 client adds to jh2 (the simulator frames HTTP/2 itself: noti.apns.simulator.wire)."""

from __future__ import annotations

import asyncio
import struct

from jh2.connection import AllowedStreamIDs, ConnectionInputs, H2Connection, _decode_headers
from jh2.exceptions import FlowControlError, FrameTooLargeError, TooManyStreamsError
from jh2.stream import StreamClosedBy, StreamInputs

_RESETS = frozenset({StreamClosedBy.SEND_RST_STREAM, StreamClosedBy.RECV_RST_STREAM})
_FRAME_HEADER = struct.Struct(">BHBBL")  # length as 1 + 2 bytes, type, flags, stream id (RFC 9113 §4.1)
_DATA, _HEADERS, _CONTINUATION = 0x0, 0x1, 0x9
_END_STREAM, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x4, 0x8, 0x20


def _frame(kind: int, flags: int, stream_id: int, payload: bytes | memoryview) -> bytes:
    length = len(payload)
    return _FRAME_HEADER.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id) + payload


class CountingH2Connection(H2Connection):
    """jh2's connection with O(1) stream counting.

    jh2 counts open streams by walking every stream on each new one (its cleanup of closed
    streams rides on that walk): O(n²) with APNs' 1,000 streams in flight. We drop each
    stream from ``streams`` as it closes (``forget``), so the count is the dict's size. APNs
    streams only ever go one way (requests out from the client, in to the server), so one
    count serves both directions.

    Of a forgotten stream only a reset is remembered: jh2 answers a late frame on a reset stream
    with RST_STREAM instead of failing the connection, and needs nothing else from a closed one
    (a frame on a stream that ended is a connection error either way). jh2 kept every closed
    stream, up to 65,536 of them per connection, which a long-lived APNs connection soon holds.
    """

    _partial = b""  # the start of a frame not yet received whole (split_answers)

    @property
    def open_outbound_streams(self) -> int:
        return len(self.streams)

    @property
    def open_inbound_streams(self) -> int:
        return len(self.streams)

    def send_request(self, stream_id: int, headers: list[tuple[bytes, bytes, bool]], end_stream: bool) -> None:
        """``send_headers`` for a new request stream, headers as (name, value, never indexed), lowercase.

        jh2's state machines make the same transitions, but the frames are packed here: jh2 builds
        a HeadersFrame object (flags set, padding and priority mixins) per request, which was a
        quarter of the client's CPU per notification.
        """
        if self.open_outbound_streams + 1 > self.remote_settings.max_concurrent_streams:
            raise TooManyStreamsError(f"max outbound streams is {self.remote_settings.max_concurrent_streams}")
        self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        stream = self._begin_new_stream(stream_id, AllowedStreamIDs.ODD)
        stream.state_machine.process_input(StreamInputs.SEND_HEADERS)
        block = self.encoder.encode(headers)
        flags = 0
        if end_stream:
            stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
            flags = _END_STREAM
        stream.request_method = headers[0][1]  # :method, which jh2 reads for HEAD's content-length rule
        size = self.max_outbound_frame_size
        if len(block) <= size:
            self._data_to_send += _frame(_HEADERS, flags | _END_HEADERS, stream_id, block)
            return
        view = memoryview(block)
        self._data_to_send += _frame(_HEADERS, flags, stream_id, view[:size])
        for start in range(size, len(block), size):
            last = start + size >= len(block)
            self._data_to_send += _frame(
                _CONTINUATION, _END_HEADERS if last else 0, stream_id, view[start : start + size]
            )

    def send_body(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """``send_data`` without jh2's DataFrame object: the same checks, windows and state transitions."""
        if len(data) > self.local_flow_control_window(stream_id):
            raise FlowControlError(f"cannot send {len(data)} bytes over the flow control window")
        if len(data) > self.max_outbound_frame_size:
            raise FrameTooLargeError(f"cannot send a {len(data)}-byte frame")
        self.state_machine.process_input(ConnectionInputs.SEND_DATA)
        stream = self.streams[stream_id]
        stream.state_machine.process_input(StreamInputs.SEND_DATA)
        if end_stream:
            stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
        stream.outbound_flow_control_window -= len(data)
        self.outbound_flow_control_window -= len(data)
        self._data_to_send += _frame(_DATA, _END_STREAM if end_stream else 0, stream_id, data)

    def split_answers(self, data: bytes) -> list[tuple[int, bytes, bool] | bytes]:
        """Received bytes as complete frames: a response's plain HEADERS frame (one that ends its header
        block, unpadded, no priority, on an open stream) as (stream id, header block, ends the stream), to
        be read by :meth:`receive_answer`; runs of every other frame as bytes, for ``receive_data``.
        An incomplete frame waits for the next call."""
        buffer = self._partial + data if self._partial else data
        parts: list[tuple[int, bytes, bool] | bytes] = []
        offset = start = 0
        size, limit = len(buffer), self.max_inbound_frame_size
        while size - offset >= 9:
            high, low, kind, flags, stream_id = _FRAME_HEADER.unpack_from(buffer, offset)
            length = (high << 16) | low
            if length > limit:  # jh2 answers it with the connection error it deserves
                offset = size
                break
            end = offset + 9 + length
            if end > size:
                break
            if (
                kind == _HEADERS and flags & _END_HEADERS and not flags & (_PADDED | _PRIORITY)
                and stream_id in self.streams
            ):  # fmt: skip
                if start < offset:
                    parts.append(buffer[start:offset])
                parts.append((stream_id, buffer[offset + 9 : end], bool(flags & _END_STREAM)))
                start = end
            offset = end
        if start < offset:
            parts.append(buffer[start:offset])
        self._partial = buffer[offset:]
        return parts

    def receive_answer(self, stream_id: int, block: bytes, end_stream: bool) -> list[tuple[bytes, bytes]]:
        """What ``receive_data`` does for a HEADERS frame picked out by :meth:`split_answers`, without parsing
        it into a frame object (a sixth of the client's CPU): decoded in order by the connection's HPACK
        decoder, through jh2's connection and stream state machines. Returns the headers."""
        headers: list[tuple[bytes, bytes]] = _decode_headers(self.decoder, block)
        self.state_machine.process_input(ConnectionInputs.RECV_HEADERS)
        self.streams[stream_id].receive_headers(headers, end_stream, None)
        return headers

    def forget(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and stream.closed:
            del self.streams[stream_id]
            if stream.closed_by in _RESETS:
                self._closed_streams[stream_id] = stream.closed_by


class H2Protocol(asyncio.Protocol):
    """An asyncio protocol around ``self.h2`` that writes at most once per event-loop iteration."""

    h2: H2Connection
    transport: asyncio.Transport | None = None
    _flush_scheduled = False

    def _flush_soon(self) -> None:
        """Write once per loop iteration: what all the tasks woken together produced shares one TLS record."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is not None:
            data = self.h2.data_to_send()
            if data:
                self.transport.write(data)
