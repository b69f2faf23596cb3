"""An in-process Redis-compatible server (fakeredis over TCP, Lua included), so that every component of
``noti dev`` uses the same redis-py code paths as in production."""

from __future__ import annotations

import select
import socket
import sys
import threading
from typing import Any

_EMPTY_DICT = sys.getsizeof({})
_ENTRY_BYTES = 64  # a fresh dict spends 30-50 bytes per entry on its table; a little more is fine


def oversized(table: dict[Any, Any]) -> bool:
    """Whether a dict's table is over four times what its entries need: deletions never shrink a dict."""
    return sys.getsizeof(table) > 4 * (_EMPTY_DICT + _ENTRY_BYTES * len(table))


def _keep_alive_handler() -> type:
    from fakeredis._clients._tcp_server import TCPFakeRequestHandler

    class KeepAliveHandler(TCPFakeRequestHandler):
        """fakeredis' TCP handler ends a connection after any error reply (NOSCRIPT, BUSYGROUP...).

        Real Redis keeps it, and redis-py reuses pooled connections, so serve on until the peer leaves.
        """

        def handle(self) -> None:
            while not self.server._shutdown_event.is_set():
                super().handle()  # returns after an error reply, when the peer left, or at shutdown
                if self._peer_closed():
                    return

        def _peer_closed(self) -> bool:
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

    return KeepAliveHandler


def _behave_like_redis() -> None:
    """Mend two ways fakeredis' TCP server differs from Redis that cost an idle ``noti dev`` CPU.

    Each connection's thread wakes 100 times a second to look for input (a select() timeout of 10 ms):
    a second is enough, as select() returns the moment input arrives and only shutdown waits on it.
    XREADGROUP ... BLOCK answers an empty read at once instead of waiting for an entry, so the
    sender would poll: an empty read of new entries (``>``) must block as it does on Redis.
    """
    from fakeredis._clients import _tcp_server
    from fakeredis.commands_mixins.streams_mixin import StreamsCommandsMixin

    _tcp_server._POLL_INTERVAL = max(_tcp_server._POLL_INTERVAL, 1.0)
    read = StreamsCommandsMixin._xreadgroup
    if getattr(read, "_noti_blocks", False):
        return

    def blocking_read(self: Any, consumer: bytes, groups: list[Any], *args: Any) -> Any:
        result = read(self, consumer, groups, *args)
        if not result and all(start == b">" for _group, _stream, start in groups):
            return None  # "nothing yet": fakeredis' _blocking waits for the next write on None only
        return result

    blocking_read._noti_blocks = True  # type: ignore[attr-defined]
    StreamsCommandsMixin._xreadgroup = blocking_read  # type: ignore[method-assign,assignment]


class EmbeddedRedis:
    """A Redis-compatible server in this process (fakeredis over TCP, Lua included)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from fakeredis import TcpFakeServer

        _behave_like_redis()
        self._server = TcpFakeServer((host, port), server_type="redis")
        self._server.RequestHandlerClass = _keep_alive_handler()
        self._server.daemon_threads = True
        address = self._server.server_address
        self.host, self.port = str(address[0]), int(address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="embedded-redis", daemon=True)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self._thread.start()
        return self

    def compact(self) -> int:
        """Rebuild the tables deletions left oversized; how many were rebuilt.

        A stream's entries and its groups' pending entries live in dicts. The sender acks and
        deletes every entry it delivered, but a dict keeps the table its peak needed: after a
        burst of 40,000 the drained stream would hold megabytes of empty table until the end.
        """
        from fakeredis.model import XStream

        server = self._server.fake_server
        rebuilt = 0
        with server.lock:  # every command runs under it: no command sees a table swapped under it
            for database in list(server.dbs.values()):
                if oversized(database._dict):
                    database._dict, rebuilt = dict(database._dict), rebuilt + 1
                for item in database._dict.values():
                    stream = item.value
                    if not isinstance(stream, XStream):
                        continue
                    if oversized(stream._values_dict):
                        stream._values_dict, rebuilt = dict(stream._values_dict), rebuilt + 1
                    for group in stream._groups.values():
                        if oversized(group.pel):
                            group.pel, rebuilt = dict(group.pel), rebuilt + 1
        return rebuilt

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
