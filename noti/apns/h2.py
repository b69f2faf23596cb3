"""What our HTTP/2 client adds to jh2 (the simulator frames HTTP/2 itself: noti.apns.simulator.wire)."""

from __future__ import annotations

import asyncio

from jh2.connection import H2Connection
from jh2.stream import StreamClosedBy

_RESETS = frozenset({StreamClosedBy.SEND_RST_STREAM, StreamClosedBy.RECV_RST_STREAM})


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

    @property
    def open_outbound_streams(self) -> int:
        return len(self.streams)

    @property
    def open_inbound_streams(self) -> int:
        return len(self.streams)

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
