"""Throwaway PostgreSQL and Redis servers, started once per test session from local binaries."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text

from harness.procs import find_binary, free_port, port_open, wait_until
from noti.store import migrate
from noti.store.db import make_engine


def _postgres_bin_dirs() -> list[str]:
    return sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)


def _drop_root() -> Callable[[], None] | None:
    """PostgreSQL refuses to run as root: when we are root, run it as the ``postgres`` user."""
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root needs a 'postgres' system user for PostgreSQL") from None

    def demote() -> None:
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)

    return demote


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory on a random loopback port."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable  # fsync and synchronous commit on, as in production (benchmarks)
        self.pg_ctl = find_binary("pg_ctl", *_postgres_bin_dirs())
        self.initdb = find_binary("initdb", *_postgres_bin_dirs())
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="noti-pg-"))
        self.data = self.root / "data"
        self._demote = _drop_root()
        self.hung = False
        if self._demote is not None:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            args, preexec_fn=self._demote, capture_output=True, text=True, cwd=self.root, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip() or result.stdout.strip()}")

    def init(self) -> None:
        self._run(self.initdb, "-D", str(self.data), "-U", "noti", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        options += " -c shared_buffers=256MB"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``immediate`` is a crash, ``fast`` a clean shutdown."""
        if (self.data / "postmaster.pid").exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def _processes(self) -> list[int]:
        """The postmaster's pid and its children's (every backend and auxiliary process)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    def hang(self) -> None:
        """SIGSTOP the whole server: connections stay open and TCP is acknowledged, but nothing answers."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)
        self.hung = True

    def resume(self) -> None:
        """SIGCONT what ``hang`` stopped."""
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)
        self.hung = False

    def url(self, database: str = "noti") -> str:
        return f"postgresql+psycopg://noti@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        engine = make_engine(self.url("postgres"), pool_size=1)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def cleanup(self) -> None:
        try:
            if self.hung:
                self.resume()
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """A redis-server in a temporary directory on a random loopback port."""

    def __init__(self, *, appendonly: bool = True) -> None:
        self.binary = find_binary("redis-server")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="noti-redis-"))
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
            "--daemonize", "no", "--logfile", str(self.root / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), timeout=15, what="redis-server")
        wait_until(self.ping, timeout=15, what="redis-server (loading)")

    def ping(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.exceptions.BusyLoadingError:
            return False
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM is a clean shutdown (AOF flushed); SIGKILL a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.process = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def hang(self) -> None:
        """SIGSTOP the server: connections stay open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        try:
            if self.process is not None:
                self.process.send_signal(signal.SIGCONT)  # SIGKILL works on a stopped process, but be plain
            self.stop(signal.SIGKILL)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_postgres() -> Iterator[tuple[PostgresServer, str]]:
    """A PostgreSQL server of the caller's own (to stop, hang or kill) and the URL of its migrated database.

    The session's server is shared by every test: an outage test must never touch it.
    """
    server = PostgresServer()
    try:
        server.init()
        server.start()
        url = server.create_database("noti")
        engine = make_engine(url, pool_size=1)
        migrate.upgrade(engine)
        engine.dispose()
        yield server, url
    finally:
        server.cleanup()


@contextmanager
def private_redis() -> Iterator[RedisServer]:
    """A Redis server of the caller's own (to stop, hang or kill)."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (tests may restart it; it is left running)."""
    server = PostgresServer()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def database_url(postgres_server: PostgresServer) -> str:
    """A PostgreSQL database migrated to the newest schema."""
    url = postgres_server.create_database("noti")
    engine = make_engine(url, pool_size=1)
    migrate.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clean_db(engine: Engine) -> Engine:
    """The migrated database with every table emptied."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "TRUNCATE notifications, device_tokens, devices, device_owners, api_keys, notification_counts,"
                " broadcast_channels RESTART IDENTITY"
            )
        )
    return engine


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's Redis server, with appendonly on so restarts keep data."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def clean_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the session's Redis, emptied before the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()
