"""The dev stack: gateway, sender and APNs simulator in one process, on SQLite and an embedded Redis."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import click
import redis.asyncio as aioredis
import uvicorn
from cryptography.hazmat.primitives import serialization
from redis.exceptions import RedisError
from sqlalchemy import Engine, select

from noti import routes
from noti.apns.simulator import Simulator
from noti.apns.simulator import start as start_simulator
from noti.apns.tokens import load_signing_key
from noti.dev.datadir import DataDir, DevError, RuntimeInfo, create_private, dev_signing_key
from noti.dev.embedded_redis import EmbeddedRedis
from noti.dev.memory import limit_malloc_arenas, release_engine, return_idle_memory
from noti.queue import QueuedNotification, StreamKeys, epoch_ms
from noti.routes import Route, apple_identity
from noti.settings import Settings
from noti.store import migrate
from noti.store.content import RECORD_COLUMNS, record_content
from noti.store.db import DatabaseUnavailable, make_engine, safe_url
from noti.store.models import FINAL_STATUSES, Notification
from noti.store.retention import retention_policy, run_periodically

log = logging.getLogger("noti.dev")
TEAM_ID = "DEVTEAM001"
KEY_ID = "DEVKEY0001"
CREDENTIAL = "dev"  # the APNsCredential name campaign manifests refer to
DEV_CREDENTIAL = f"default/{CREDENTIAL}"  # its identity: the queues it owns and the route it claims
SIMULATOR_COUNTED_TOKENS = 1_000  # the simulator's by_token counts the latest tokens only: it runs for days


@dataclass(frozen=True)
class DevOptions:
    host: str
    port: int
    data_dir: str
    app: str
    sim_port: int


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: Ctrl-C is ours to handle, and we need to know when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()


class DevStack:
    def __init__(self, options: DevOptions, settings: Settings) -> None:
        self.options = options
        self.settings = settings  # from the environment: a store and Redis to use, the components' tuning
        self._compactors: list[Callable[[], object]] = []  # what a quiet stack releases after a burst

    async def run(self) -> None:
        options = self.options
        limit_malloc_arenas()  # before the embedded Redis starts its threads
        data = DataDir.prepare(options.data_dir)
        lock = data.claim()  # held until this process ends: one stack per data directory
        try:
            await self._start(data)
        finally:
            with contextlib.suppress(FileNotFoundError):
                data.runtime.unlink()
            os.close(lock)

    async def _start(self, data: DataDir) -> None:
        options = self.options
        ensure_port_free(options.host, options.port, "gateway", "--port")
        ensure_port_free("127.0.0.1", options.sim_port, "APNs simulator", "--sim-port")
        database_url = self.settings.dev.database_url
        if not database_url:
            create_private(data.database)
            database_url = f"sqlite:///{data.database}"
        engine = make_engine(database_url)
        if engine.dialect.name == "sqlite":
            self._compactors.append(functools.partial(release_engine, engine))
        try:
            await asyncio.to_thread(migrate.upgrade, engine)
        except DatabaseUnavailable as exc:
            raise DevError(str(exc)) from None
        embedded: EmbeddedRedis | None = None
        redis_url = self.settings.dev.redis_url
        if not redis_url:
            embedded = EmbeddedRedis().start()
            redis_url = embedded.url
            self._compactors.append(embedded.compact)
        redis = aioredis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            raise DevError(f"cannot reach Redis at {redis_url}: {exc}") from None
        simulator = None
        try:
            simulator = await start_simulator(
                host="127.0.0.1", port=options.sim_port, control_port=0, max_counted_tokens=SIMULATOR_COUNTED_TOKENS
            )
            await self._serve(data, engine, redis, redis_url, database_url, simulator, embedded is not None)
        finally:
            if simulator is not None:
                await simulator.stop()
            await redis.aclose()
            if embedded is not None:
                embedded.stop()
            engine.dispose()

    async def _serve(
        self, data: DataDir, engine: Engine, redis: aioredis.Redis, redis_url: str, database_url: str,
        simulator: Simulator, requeue: bool,
    ) -> None:  # fmt: skip
        from noti.gateway.app import create_app
        from noti.sender.service import Sender

        options = self.options
        key_pem = dev_signing_key(data)
        public = load_signing_key(key_pem).public_key()
        public_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        await simulator.register_key(TEAM_ID, KEY_ID, [options.app], public_pem)
        credential = StreamKeys(DEV_CREDENTIAL)
        # Published before the gateway listens: its first send finds the app served.
        claimed = await routes.claim(
            redis, options.app, "sandbox", Route(DEV_CREDENTIAL, apple_identity(TEAM_ID, KEY_ID))
        )
        if not claimed.serves:
            raise DevError(
                f"{options.app} in sandbox is served by {claimed.holder.credential} in the Redis at {redis_url}: "
                "use another --app or another Redis"
            )
        if requeue:
            count = await requeue_unfinished(engine, redis, credential, options.app)
            if count:
                click.echo(f"re-queued {count} notifications left unfinished by the last run")
        api_key = await asyncio.to_thread(self._api_key, data, engine)
        stack = self.settings.model_copy(update={"database_url": database_url, "redis_url": redis_url})
        settings = stack.model_copy(
            update={
                "apns_environment": "sandbox",
                "gateway_host": options.host,
                "gateway_port": options.port,
                "gateway_default_app": options.app,
            }
        ).gateway
        gateway_url = f"http://{options.host}:{options.port}"
        app = create_app(settings, engine=engine, redis=redis)
        server = _EmbeddedServer(
            uvicorn.Config(
                app,
                host=options.host,
                port=options.port,
                log_level="warning",
                lifespan="on",
                forwarded_allow_ips=settings.gateway_forwarded_allow_ips,
            )
        )
        sender = Sender(
            stack.model_copy(
                update={
                    "credential": DEV_CREDENTIAL,
                    "apns_team_id": TEAM_ID,
                    "apns_key_id": KEY_ID,
                    "apns_key_file": data.apns_key,
                    "apns_cert_file": None,
                    "apns_bundle_id": options.app,
                    "apns_environment": "sandbox",
                    "apns_endpoint": simulator.url,
                    "apns_channels_endpoint": simulator.channels_url,
                    "apns_proxy": None,
                    "apns_ca_file": simulator.ca_path,
                    "sender_health_port": 0,
                    "sender_claim_idle_seconds": 10,
                }
            ).sender,
            engine=engine,
            redis=redis,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        serving = asyncio.create_task(server.serve(), name="gateway")
        sending = asyncio.create_task(sender.run(), name="sender")
        await asyncio.wait({serving, asyncio.create_task(server.ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            sender.stop()
            await sending
            raise DevError(f"the gateway could not listen on {options.host}:{options.port}")
        data.write_runtime(
            RuntimeInfo(
                os.getpid(),
                database_url,
                redis_url,
                gateway_url,
                options.app,
                "sandbox",
                CREDENTIAL,
                simulator_url=simulator.url,
                simulator_control_url=f"http://127.0.0.1:{simulator.control_port}",
                team_id=TEAM_ID,
                key_id=KEY_ID,
                key_file=str(data.apns_key),
                ca_file=str(simulator.ca_path),
            )
        )
        click.echo(self._banner(data, database_url, gateway_url, simulator.url, api_key))
        trimming = asyncio.create_task(return_idle_memory(self._compactors), name="memory")
        retaining = asyncio.create_task(
            run_periodically(engine, retention_policy(self.settings.store)), name="retention"
        )
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({stopped, serving, sending}, return_when=asyncio.FIRST_COMPLETED)
        click.echo("stopping: draining the sender…")
        server.should_exit = True
        sender.stop()
        await asyncio.gather(serving, sending, return_exceptions=True)
        stopped.cancel()
        trimming.cancel()
        retaining.cancel()
        click.echo("stopped")

    def _api_key(self, data: DataDir, engine: Engine) -> str:
        """The dev API key: the stored one while it still works, else a new one (send, read, admin)."""
        from noti.gateway.auth import KeyVerifier, Scope, create_api_key

        if data.api_key.exists():
            stored = data.api_key.read_text().strip()
            if KeyVerifier(engine, 0).verify(stored) is not None:
                return stored
        key = create_api_key(engine, "noti dev", [Scope.SEND, Scope.READ, Scope.ADMIN])
        fd = os.open(data.api_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        return key

    def _banner(self, data: DataDir, database_url: str, gateway_url: str, simulator_url: str, api_key: str) -> str:
        token = "a1" * 32
        return "\n".join(
            [
                "",
                f"Noti dev stack is running (data in {data.root}, store {safe_url(database_url)})",
                f"  API       {gateway_url}/api/",
                f"  Docs      {gateway_url}/api/docs/",
                f"  Admin     {gateway_url}/admin/   (any user name; the API key is the password)",
                f"  APNs sim  {simulator_url}   (app {self.options.app}, sandbox)",
                f"  API key   {api_key}",
                "",
                "Try it:",
                f"  export NOTI_URL={gateway_url} NOTI_API_KEY={api_key}",
                # -w '\n': the JSON answer ends without a newline, and the shell prompt would follow it
                "  curl -s -w '\\n' -X POST $NOTI_URL/api/notifications/ "
                '-H "Authorization: Bearer $NOTI_API_KEY" '
                f'-H \'content-type: application/json\' -d \'{{"device_token": "{token}", "app": "{self.options.app}", '
                f'"title": "Hello", "body": "from Noti"}}\'',
                "",
                "Ctrl-C stops it; the next start keeps the data.",
            ]
        )


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


async def requeue_unfinished(engine: Engine, redis: aioredis.Redis, keys: StreamKeys, app: str) -> int:
    """Queue the app's unfinished records again, with the content they were queued with: the
    embedded Redis forgets its queues on exit. Returns how many."""

    def unfinished() -> list[QueuedNotification]:
        columns = [getattr(Notification, name) for name in RECORD_COLUMNS]
        query = select(
            Notification.id, Notification.device_token, Notification.device_id, Notification.campaign,
            Notification.created_at, *columns,
        ).where(Notification.app == app, Notification.status.notin_(FINAL_STATUSES))  # fmt: skip
        with engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            QueuedNotification(
                id=row.id,
                device_token=row.device_token,
                app=app,
                content=record_content(row),
                device_id=row.device_id,
                campaign=row.campaign,
                created_at=epoch_ms(row.created_at),
            )
            for row in rows
        ]

    messages = await asyncio.to_thread(unfinished)
    if messages:
        async with redis.pipeline(transaction=False) as pipe:
            for message in messages:
                pipe.xadd(keys.transactional_stream, message.encode())  # type: ignore[arg-type]
            await pipe.execute()
    return len(messages)
