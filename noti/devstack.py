"""Pieces of the embedded default (``noti dev``) that are not a component of their own.

The data directory, a port check, an in-process Redis-compatible server (fakeredis over
TCP, so every component uses the same redis-py code paths as in production) and the dev
credential's signing key.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import socket
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


class DevError(RuntimeError):
    """Something the user must fix before ``noti dev`` can start; the message says what."""


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """What other commands need to reach a running dev stack."""

    pid: int
    database_url: str
    redis_url: str
    gateway_url: str
    app: str
    environment: str
    credential: str  # name of the dev APNsCredential campaigns refer to
    simulator_url: str = ""
    simulator_control_url: str = ""  # GET /counters: what the APNs simulator received
    # The dev credential, for `noti send --dev` straight to the simulator.
    team_id: str = ""
    key_id: str = ""
    key_file: str = ""  # the .p8 signing key
    ca_file: str = ""  # the simulator's certificate, to trust


@dataclass(frozen=True, slots=True)
class DataDir:
    """Where ``noti dev`` keeps what survives a restart."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "noti.db"

    @property
    def apns_key(self) -> Path:
        return self.root / "dev-apns-key.p8"

    @property
    def api_key(self) -> Path:
        return self.root / "dev-api-key"

    @property
    def runtime(self) -> Path:
        """Written while ``noti dev`` runs: where its database, Redis and gateway are."""
        return self.root / "running.json"

    @property
    def lock(self) -> Path:
        """Held (flock) by the one dev stack that owns this directory, for as long as it runs."""
        return self.root / "lock"

    def claim(self) -> int:
        """Take the directory for this process, or say which stack has it; returns the lock's descriptor.

        The kernel drops the lock when the process ends, however it ends, so a killed stack leaves no stale lock.
        """
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 4096).decode(errors="replace").strip()
            os.close(fd)
            raise DevError(
                f"the data directory {self.root} is in use by the dev stack {self._describe(owner)}: "
                "stop that one first, or give this one another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return fd

    def _describe(self, pid: str) -> str:
        try:
            info = RuntimeInfo(**json.loads(self.runtime.read_text()))
        except (OSError, ValueError, TypeError):
            return f"with pid {pid}" if pid else "starting there"
        return f"at {info.gateway_url} (pid {info.pid})"

    def in_use(self) -> bool:
        """Whether a dev stack holds this directory now."""
        try:
            fd = os.open(self.lock, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def write_runtime(self, info: RuntimeInfo) -> None:
        write_private(self.runtime, json.dumps(asdict(info), indent=2).encode())

    def read_runtime(self) -> RuntimeInfo:
        """Where the running dev stack is; a file left by a stack that was killed does not count."""
        missing = DevError(
            f"no dev stack is running with data directory {self.root}: start `noti dev` first "
            "(or set NOTI_DATABASE_URL and NOTI_REDIS_URL)"
        )
        if not self.in_use():
            raise missing
        try:
            return RuntimeInfo(**json.loads(self.runtime.read_text()))
        except FileNotFoundError:
            raise missing from None

    @classmethod
    def at(cls, path: str | Path) -> DataDir:
        """The data directory at ``path``, for reading: nothing is created."""
        return cls(Path(path).expanduser().resolve())

    @classmethod
    def prepare(cls, path: str | Path) -> DataDir:
        """Create the directory if needed (readable by its owner only) and make sure we can write in it."""
        root = Path(path).expanduser().resolve()
        try:
            if not root.exists():
                root.mkdir(parents=True, mode=0o700)
            probe = root / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise DevError(
                f"cannot write to the data directory {root} ({exc.strerror or exc}): "
                "choose another with --data-dir or NOTI_DATA_DIR"
            ) from None
        return cls(root)


def write_private(path: Path, content: bytes) -> None:
    """Replace ``path`` atomically with a file only its owner may read (it may hold secrets)."""
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.replace(partial, path)


def create_private(path: Path) -> None:
    """Make sure ``path`` exists and only its owner may read it (SQLite gives its -wal/-shm files the same mode)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def ensure_port_free(host: str, port: int, what: str, option: str) -> None:
    """Fail with a clear message when ``port`` is taken (0 means any free port)."""
    if port == 0:
        return
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DevError(f"port {port} for the {what} is in use: stop what uses it or pass {option}") from None
            raise DevError(f"cannot listen on {host}:{port} for the {what}: {exc.strerror}") from None


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

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def dev_signing_key(data: DataDir) -> bytes:
    """The dev credential's ES256 key (PKCS#8 PEM, like Apple's .p8), made on first start."""
    if data.apns_key.exists():
        return data.apns_key.read_bytes()
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(data.apns_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return pem


def _glibc() -> Any:
    """glibc, when this process runs on it (the memory calls below are glibc's), else None."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or os.uname().sysname != "Linux":
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def limit_malloc_arenas(count: int = 2) -> None:
    """Few malloc arenas: the embedded Redis' threads would each keep one, and freed memory in it."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-8, count)  # M_ARENA_MAX


async def return_idle_memory(interval: float = 30.0) -> None:
    """Give freed memory back to the system now and then, so a dev stack shrinks again after a burst."""
    import asyncio
    import gc

    libc = _glibc()
    if libc is None:
        return
    while True:
        await asyncio.sleep(interval)
        gc.collect()
        libc.malloc_trim(0)
