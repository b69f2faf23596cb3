"""The sender: a credential's Redis streams → APNs → delivery records, at-least-once, nothing lost.

:class:`Sender` runs the parts and holds the in-flight window: it reads (:mod:`.reader`), delivers each
entry in a task of its own (:mod:`.delivery`, deciding by :mod:`.policy`), records (:mod:`.recorder`),
moves due retries back (:mod:`.retry_set`) and takes over what dead senders left (:mod:`.claimer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from noti import routes
from noti.apns.channels import ChannelClient
from noti.apns.client import APNsClient, client_ssl_context
from noti.apns.tokens import ProviderTokens, load_signing_key
from noti.apns.transport import H2Transport
from noti.ratelimit import TokenBucket
from noti.sender.channels import ChannelAgent
from noti.sender.claimer import PAGE, Claimer
from noti.sender.delivery import Deliverer, Parked
from noti.sender.health import HealthServer
from noti.sender.metrics import SenderMetrics
from noti.sender.policy import Limits, TopicGuard, backoff_delay
from noti.sender.reader import StreamReader
from noti.sender.recorder import Finished, Recorder
from noti.sender.retry_set import RetryQueue
from noti.settings import SenderSettings
from noti.store.db import Bounds, make_engine
from noti.store.tables import utcnow
from noti.tracing import SENDER, Tracing
from noti.tracing import setup as setup_tracing

log = logging.getLogger(__name__)
# Entries read (and set going) at once. Small reads keep the window's deliveries at different stages
# instead of hundreds building payloads and frames together: at 100 the sender peaks ~3 MB lower than
# at 500 and spends no more CPU per notification (bench_sender; issue #17).
READ_CHUNK = 100
REDIS_CONNECTIONS = 64
LIVENESS_SECONDS = 60.0  # a read loop that has not turned for this long is stuck: /healthz fails


class SenderError(RuntimeError):
    """The sender cannot start; the message says what to fix."""


def client_context(config: SenderSettings) -> ssl.SSLContext:
    """TLS of the credential's APNs connections: the extra CA, and its certificate for certificate auth."""
    try:
        ssl_context = client_ssl_context(
            ca_file=config.apns_ca_file,
            **(
                {"p12_file": config.apns_cert_file, "p12_password": (config.apns_cert_password or "").encode() or None}
                if config.apns_cert_file and config.apns_cert_file.suffix == ".p12"
                else {"cert_file": config.apns_cert_file}
            ),
        )
    except (OSError, ValueError, ssl.SSLError) as exc:
        # Never the password or the file's bytes: only what is wrong with it.
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SenderError(
            f"cannot use the APNs certificate {config.apns_cert_file} (wrong password, or not a .p12/.pem "
            f"with its key): {what}"
        ) from None
    return ssl_context


def build_client(
    config: SenderSettings, redis: aioredis.Redis | None, ssl_context: ssl.SSLContext | None = None
) -> APNsClient:
    """The APNs client of the configured credential, its provider token shared through ``redis``."""
    ssl_context = ssl_context or client_context(config)
    tokens = None
    if config.apns_cert_file is None:
        assert config.apns_key_file is not None
        try:
            key = load_signing_key(config.apns_key_file.read_bytes())
        except OSError as exc:
            raise SenderError(f"cannot read the APNs key file {config.apns_key_file}: {exc.strerror}") from None
        # Shared under the identity's name (team, key id, key fingerprint), never the app's.
        tokens = ProviderTokens(key, config.apns_key_id, config.apns_team_id, redis=redis)
    return APNsClient(
        config.apns_bundle_id,
        environment=config.apns_environment,
        endpoint=config.apns_endpoint,
        tokens=tokens,
        ssl_context=ssl_context,
        connections=config.sender_connections,
        proxy=config.apns_proxy,
    )


class Sender:
    """Serves one credential until :meth:`stop`; embeddable (``noti dev``) or run by ``noti sender``."""

    def __init__(
        self,
        config: SenderSettings,
        *,
        engine: Engine | None = None,
        redis: aioredis.Redis | None = None,
        client: APNsClient | None = None,
        metrics: SenderMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        problems = config.problems()
        if problems:
            raise SenderError("; ".join(problems))
        self.config = config
        self.queue = config.queue
        self._owns = (engine is None, redis is None, client is None)
        self.engine = engine or make_engine(
            config.database_url, pool_size=config.database_pool_size, bounds=Bounds.of(config)
        )
        # A blocking pool: a thousand deliveries at once (all asking for the provider token at start,
        # or scheduling retries) wait for a connection instead of failing with "Too many connections".
        self.redis = redis or aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                config.redis_url,
                max_connections=REDIS_CONNECTIONS,
                timeout=30,
                socket_timeout=10,
                socket_connect_timeout=5,
                health_check_interval=10,
            )
        )
        # One TLS context for every APNs connection of the credential (pushes and channels): each holds
        # its own copy of the CA store, ~0.8 MB of the sender's RSS.
        ssl_context = client_context(config)
        self.client = client or build_client(config, self.redis, ssl_context)
        self.metrics = metrics or SenderMetrics()
        self._owns_tracing = tracing is None
        self.tracing = tracing or setup_tracing(config, SENDER)
        self._slot = asyncio.Event()
        self.recorder = Recorder(
            self.engine,
            self.redis,
            self.metrics,
            batch_size=config.sender_batch_size,
            interval=config.sender_batch_interval,
            on_acked=self._slot.set,
            finished_counter=self.queue.finished,
        )
        self.retries = RetryQueue(self.redis, self.queue.retries)
        self.bucket = TokenBucket(self.redis, self.queue.rate_limit, config.sender_rate_per_second)
        self.reader = StreamReader(self.redis, self.engine, self.queue, config.sender_consumer)
        self.claimer = Claimer(self.redis, self.engine, config.sender_consumer, config.sender_claim_idle_seconds)
        guard = TopicGuard(config.sender_topic_guard_answers, config.sender_topic_guard_tokens)
        limits = Limits(config.sender_max_attempts, config.sender_backoff_base, config.sender_backoff_max, guard)
        self.deliverer = Deliverer(
            self.client,
            self.redis,
            self.queue,
            self.recorder,
            self.metrics,
            limits,
            self._credential_refused,
            tracing=self.tracing,
        )
        self.channels = ChannelAgent(
            ChannelClient(
                config.apns_bundle_id, environment=config.apns_environment, tokens=self.client.tokens,
                management_url=config.apns_channels_endpoint, push_url=config.apns_endpoint,
                ssl_context=ssl_context, proxy=config.apns_proxy,
            ),
            self.redis, self.engine, self.queue, tokens=lambda: self.client.tokens, bucket=self.bucket,
            backoff_base=config.sender_backoff_base, backoff_max=min(config.sender_backoff_max, 5.0),
        )  # fmt: skip
        self._in_flight: set[asyncio.Task[None]] = set()
        # Read when scraped rather than set twice per notification (~5% of the sender's CPU).
        self.metrics.in_flight.set_function(lambda: len(self._in_flight))
        self._sending: dict[asyncio.Task[None], tuple[str, bytes]] = {}  # in-flight task -> its entry
        self._stopping = asyncio.Event()
        self._stop_at: float | None = None
        self.credential_failure: str | None = None
        self._refused = asyncio.Event()  # set while credential_failure is
        self._refused_again = False  # a probe's delivery was refused too
        # Entries whose delivery stopped on the refused credential: pending, sent again once it is accepted.
        self._parked: dict[tuple[str, bytes], dict[bytes, bytes]] = {}
        self.redis_failure: str | None = None  # why the last read of the streams failed, until one succeeds
        self._beat = time.monotonic()  # the read loop's last turn: a loop that stopped turning is not alive
        self.health_port: int | None = None

    # lifecycle
    def stop(self) -> None:
        """Stop reading, drain what is in flight, write and ack, then return from :meth:`run`."""
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        self._stopping.set()
        self._slot.set()

    async def run(self) -> None:
        health = HealthServer(self.metrics.registry, self.status)
        if self.config.sender_health_port:
            self.health_port = await health.start("0.0.0.0", self.config.sender_health_port)
        await self._publish_status("Ready", "")
        await self._claim_route()
        background = [
            asyncio.create_task(self.recorder.run(), name="recorder"),
            asyncio.create_task(self._move_retries(), name="retries"),
            asyncio.create_task(self._claim_abandoned(), name="claimer"),
            asyncio.create_task(self._watch_backlog(), name="backlog"),
            asyncio.create_task(self._recover_credential(), name="credential"),
            asyncio.create_task(self.channels.run(self._stopping), name="channels"),
        ]
        log.info(
            "sender for %s (%s) started as %s", self.config.credential, self.queue.tag, self.config.sender_consumer
        )
        try:
            await self._read_loop()
        finally:
            # The grace period counts from stop(): requests get most of it, the last write and ack the rest.
            deadline = (self._stop_at or time.monotonic()) + self.config.sender_grace_period
            reserve = min(5.0, self.config.sender_grace_period / 4)
            await self._drain(deadline - reserve - time.monotonic())
            for task in background:
                if task.get_name() == "recorder":
                    continue
                task.cancel()
            self.recorder.stop()
            try:
                await asyncio.wait_for(self._final_flush(background), max(0.5, deadline - time.monotonic()))
            except TimeoutError:
                # Not written (the database or Redis is away): the entries stay pending, another sender claims them.
                log.warning("grace period over with %d outcomes unacknowledged", self.recorder.unacked)
            await health.stop()
            await self._close()

    async def _claim_route(self) -> None:
        """Publish that this credential serves its app (as the operator does), so that a sender run without
        the operator gets the gateway's traffic; another credential holding the route keeps it."""
        config = self.config
        try:
            claimed = await routes.claim(self.redis, config.apns_bundle_id, config.apns_environment,
                                         config.route())  # fmt: skip
        except (RedisError, OSError, ValueError) as exc:
            log.warning("could not claim the route of %s: %s", config.credential, exc)
            return
        if not claimed.serves:
            log.error(
                "%s in %s is served by credential %s, not %s: this sender gets only %s's campaigns",
                config.apns_bundle_id, config.apns_environment, claimed.holder.credential, config.credential,
                config.credential,
            )  # fmt: skip

    async def _final_flush(self, background: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*background, return_exceptions=True)
        await self.recorder.flush()

    async def _drain(self, seconds: float) -> None:
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=max(0.0, seconds))
            for task in pending:  # their messages stay pending in Redis: another sender claims them
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _close(self) -> None:
        owns_engine, owns_redis, owns_client = self._owns
        await self.channels.client.aclose()
        if owns_client:
            await self.client.aclose()
        if owns_redis:
            await self.redis.aclose()
        if owns_engine:
            self.engine.dispose()
        if self._owns_tracing:
            self.tracing.shutdown()

    def status(self) -> dict[str, Any]:
        """What /healthz (``live``: restart me if false) and /readyz (``ready``: I can deliver) answer.

        A wrong credential (or topic) or an unreachable Redis makes the sender not ready, but still
        alive: a restart would not fix either, and it recovers by itself once they are fixed (the
        credential is tried again with backoff, and at once when its key file or shared token changes).
        """
        return {
            "live": time.monotonic() - self._beat < LIVENESS_SECONDS,
            "ready": self.credential_failure is None and self.redis_failure is None,
            "credential": self.config.credential,
            "in_flight": len(self._in_flight),
            "credential_failure": self.credential_failure,
            "redis_failure": self.redis_failure,
        }

    async def _credential_refused(self, reason: str, entry: Parked) -> None:
        """APNs refused the credential: stop reading, keep the entry, and probe again until it is accepted."""
        stream, entry_id, fields = entry
        self._parked[(stream, entry_id)] = fields
        self._refused_again = True
        if self.credential_failure is None:
            self.credential_failure = reason
            self._refused.set()
            log.error("APNs refused credential %s: %s; sending paused until it is accepted", self.config.credential,
                      reason)  # fmt: skip
            await self._publish_status("CredentialFailed", reason)

    # recovering a refused credential
    async def _recover_credential(self) -> None:
        """While the credential is refused, send one parked entry again: after a backoff (exponential,
        capped), or at once when the key file or the shared provider token changes."""
        tries = 0
        while not self._stopping.is_set():
            await self._refused.wait()
            if self._stopping.is_set():
                return
            delay = backoff_delay(min(tries, 30), 0.0, self.config.sender_probe_base, self.config.sender_probe_max)
            changed = await self._changes_within(delay)
            if changed == "key" and self._reload_key() and isinstance(self.client.transport, H2Transport):
                # Apple refuses a new token on a connection that carried another within 20 minutes
                # (TooManyProviderTokenUpdates): the new key's token goes on new connections.
                await self.client.transport.aclose()
            if await self._probe():
                tries = 0
            else:
                tries += 1

    def _key_signature(self) -> tuple[int, int, int] | None:
        path = self.config.apns_key_file
        if path is None or self.client.tokens is None:
            return None
        try:
            info = path.stat()  # follows the symlink a Secret volume swaps on update
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size

    async def _stored_token(self) -> bytes | None:
        tokens = self.client.tokens
        if tokens is None:
            return None
        with contextlib.suppress(RedisError, OSError):
            value = await self.redis.get(tokens.redis_key)
            return value if isinstance(value, bytes) else None
        return None

    async def _changes_within(self, seconds: float) -> str | None:
        """Wait ``seconds``, or less: "key" when the key file changes, "token" when the shared token does."""
        key, token = self._key_signature(), await self._stored_token()
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
            if self._key_signature() != key:
                return "key"
            if await self._stored_token() != token:
                return "token"
        return None

    def _reload_key(self) -> bool:
        """Sign with the key file as it is now (a fixed or rotated Secret), keeping key id and team."""
        path = self.config.apns_key_file
        assert path is not None
        try:
            key = load_signing_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("the APNs key file changed but cannot be used yet: %s", exc)
            return False
        self.client.tokens = ProviderTokens(key, self.config.apns_key_id, self.config.apns_team_id, redis=self.redis)
        log.info("APNs key file of %s changed: signing with it from now on", self.config.credential)
        return True

    async def _probe(self) -> bool:
        """Send one entry while the credential is refused; True when APNs no longer refuses it (sending resumes).

        A fresh entry from the streams comes first: the parked ones were all refused, and after a
        DeviceTokenNotForTopic pause they may all be tokens of another app, which would never pass.
        """
        if self._stopping.is_set():
            return False
        try:
            fresh = await self.reader.read(1)
        except (RedisError, OSError):
            return False
        if fresh:
            stream, entry_id, fields = fresh[0]
        elif self._parked:
            (stream, entry_id), fields = next(iter(self._parked.items()))
            del self._parked[(stream, entry_id)]  # parked again at the end if refused again
        else:
            return False  # nothing to try it with: the next entry to arrive is the probe
        self._refused_again = False
        task = self._spawn(stream, entry_id, fields)
        await asyncio.wait({task})
        if task.cancelled() or task.exception() is not None:
            self._parked.setdefault((stream, entry_id), fields)  # an outage: still pending, try it later
            return False
        if self._refused_again:
            return False
        log.info("APNs accepts credential %s again: sending resumed", self.config.credential)
        self.credential_failure = None
        self._refused.clear()
        await self._publish_status("Ready", "")
        parked, self._parked = self._parked, {}
        for (stream, entry_id), fields in parked.items():
            self._spawn(stream, entry_id, fields)
        return True

    async def _publish_status(self, state: str, reason: str) -> None:
        with contextlib.suppress(RedisError):
            await self.redis.hset(
                self.queue.status, mapping={"state": state, "reason": reason, "at": utcnow().isoformat()}
            )

    async def _read_loop(self) -> None:
        while not self._stopping.is_set():
            self._beat = time.monotonic()
            if self.credential_failure is not None:
                await asyncio.sleep(1)
                continue
            free = self._free()
            if free <= 0:
                self._slot.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot.wait(), 1)
                continue
            try:
                wanted = (await self.bucket.take(min(free, READ_CHUNK))).granted
                if wanted == 0:
                    await asyncio.sleep(0.02)
                    continue
                entries = await self.reader.read(wanted)
                self.redis_failure = None
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost the group (restarted without its data): make it again
                    self.reader.forget_groups()
                    continue
                raise
            except (RedisError, OSError) as exc:
                log.warning("reading the streams failed, retrying: %s", exc)
                self.redis_failure = f"{type(exc).__name__}: {exc}"
                self.reader.forget_groups()
                await asyncio.sleep(1)
                continue
            for stream, entry_id, fields in entries:
                self._spawn(stream, entry_id, fields)

    def _free(self) -> int:
        """Room left in the in-flight window: read and not yet acknowledged, whether sending or being recorded.

        The window bounds what a crash makes another sender send again, so it counts outcomes the
        recorder still holds, not only requests waiting for APNs.
        """
        return self.config.sender_concurrency - len(self._in_flight) - self.recorder.unacked - len(self._parked)

    def _spawn(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> asyncio.Task[None]:
        task = asyncio.create_task(self.deliverer.deliver(stream, entry_id, fields))
        self._in_flight.add(task)
        self._sending[task] = (stream, entry_id)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._sending.pop(task, None)
        self._slot.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivering a notification failed unexpectedly", exc_info=task.exception())

    # background duties
    async def _move_retries(self) -> None:
        while True:
            try:
                waiting = await self.redis.zcard(self.queue.retries)
                # the move is a script: run it only when there is something to move (an idle sender's cost)
                moved = await self.retries.move_due(time.time()) if waiting else 0
                self.metrics.retries_waiting.set(max(waiting - moved, 0))
            except (RedisError, OSError):
                moved = 0
            await asyncio.sleep(0.05 if moved else 0.5)

    async def _claim_abandoned(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.claimer.idle_seconds / 2))
            if self._stopping.is_set() or self.credential_failure is not None:
                continue
            for stream in self.reader.streams:
                # An outage (Redis or the store, asked which claimed records are final) ends this sweep only.
                with contextlib.suppress(RedisError, OSError, DBAPIError, PoolTimeout):
                    await self._claim(stream)

    async def _claim(self, stream: str) -> None:
        start: Any = "0-0"
        while not self._stopping.is_set():
            chunk = min(PAGE, self.config.sender_concurrency)  # a window under a page must not wait forever
            while self._free() < chunk:
                self._slot.clear()
                await self._slot.wait()
            page = await self.claimer.claim(stream, start, chunk, self._holding)
            for entry_id in page.already_final:
                self.recorder.add(Finished(stream, entry_id, None))
            for entry_id, fields in page.to_send:
                self._spawn(stream, entry_id, fields)
            if page.last:
                return
            start = page.next_start

    def _holding(self) -> set[tuple[str, bytes]]:
        """The entries this sender works on: being sent, or handed to the recorder and not yet acked."""
        return {*self._sending.values(), *self.recorder.holding, *self._parked}

    async def _watch_backlog(self) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):
                for stream in self.reader.streams:
                    self.metrics.backlog.labels(stream).set(await self.redis.xlen(stream))
            await asyncio.sleep(5)
