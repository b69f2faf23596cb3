"""``noti sender`` processes against crashes and restarts: real PostgreSQL, Redis and the APNs simulator."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, select

from harness.apns import SimulatorProcess
from harness.sender import enqueue, final_count, statuses, stream_keys_of, wait_for_final
from harness.services import PostgresServer, RedisServer, private_postgres, private_redis
from noti.queue import CONSUMER_GROUP, QueuedNotification
from noti.store import records
from noti.store.db import Bounds, make_engine
from noti.store.models import FINAL_STATUSES, Notification

log = logging.getLogger(__name__)
pytestmark = pytest.mark.slow

WINDOW = 1000  # NOTI_SENDER_CONCURRENCY: messages one sender holds unacknowledged at most
GRACE = 10.0  # NOTI_SENDER_GRACE_PERIOD


class SenderProcess:
    """One ``noti sender`` subprocess for the credential of its env, its output in a log file."""

    def __init__(self, env: dict[str, str], directory: Path, name: str) -> None:
        self.log_path = directory / f"sender-{name}.log"
        with self.log_path.open("wb") as output:
            # Away from the repository root, whose operator/ folder would shadow the standard library.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "noti.cli", "sender", "--credential", env["NOTI_CREDENTIAL"]],
                env=env, cwd=directory, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(GRACE + 20)
        return code, time.monotonic() - started


def _env(simulator: SimulatorProcess, database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **os.environ, **simulator.sender_env(), "NOTI_DATABASE_URL": database_url, "NOTI_REDIS_URL": redis_url,
        "NOTI_SENDER_HEALTH_PORT": "0", "NOTI_SENDER_CLAIM_IDLE_SECONDS": "3", "NOTI_SENDER_BACKOFF_BASE": "0.05",
        "NOTI_SENDER_BACKOFF_MAX": "0.5", "NOTI_SENDER_CONCURRENCY": str(WINDOW),
        "NOTI_SENDER_GRACE_PERIOD": str(GRACE), "PYTHONUNBUFFERED": "1",
    }  # fmt: skip


@pytest.fixture
def launch_sender(
    clean_db: Engine, clean_redis: redis.Redis, apns_simulator: SimulatorProcess, database_url: str, redis_url: str,
    tmp_path: Path,
) -> Iterator[Callable[[], SenderProcess]]:  # fmt: skip
    """Starts a sender process for the simulator's credential per call; kills whatever is left at the end."""
    started: list[SenderProcess] = []

    def launch() -> SenderProcess:
        started.append(SenderProcess(_env(apns_simulator, database_url, redis_url), tmp_path, str(len(started) + 1)))
        return started[-1]

    yield launch
    for sender in started:
        if sender.alive():
            sender.kill()


def _wait_final(engine: Engine, expected: int, seconds: float, sender: SenderProcess) -> None:
    reached = wait_for_final(engine, expected, seconds)
    assert reached >= expected, (
        f"{reached}/{expected} final after {seconds:.0f}s; sender said:\n{sender.output[-3000:]}"
    )


def _wait_acked(client: redis.Redis, stream: str, seconds: float = 20) -> None:
    """Records are written before their entries are acked: give the last acks a moment."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (client.xlen(stream) or client.xpending(stream, CONSUMER_GROUP)["pending"]):
        time.sleep(0.1)
    assert client.xlen(stream) == 0, "acknowledged entries are deleted from the stream"
    assert client.xpending(stream, CONSUMER_GROUP)["pending"] == 0


def test_killed_sender_loses_nothing_and_resends_at_most_its_window(
    launch_sender: Callable[[], SenderProcess], clean_db: Engine, clean_redis: redis.Redis,
    apns_simulator: SimulatorProcess,
) -> None:  # fmt: skip
    tokens = [f"{i:064x}" for i in range(20_000)]
    ids = enqueue(clean_db, clean_redis, apns_simulator, tokens, campaign="default/killed")
    first = launch_sender()
    _wait_final(clean_db, 3000, 60, first)
    first.kill()  # SIGKILL: no drain, no flush, no ack
    at_kill = final_count(clean_db)
    stream = stream_keys_of(apns_simulator).transactional_stream
    held = clean_redis.xpending(stream, CONSUMER_GROUP)["pending"]
    assert at_kill < len(ids), "the first sender finished before it could be killed mid-run"

    second = launch_sender()
    _wait_final(clean_db, len(ids), 90, second)

    assert statuses(clean_db) == {"sent": len(ids)}  # one record per id (primary key), every one sent
    with clean_db.connect() as connection:
        assert set(connection.execute(select(Notification.id)).scalars()) == set(ids)
        # Outcomes written before the kill and redelivered after it count once.
        assert records.campaign_counts(connection, "default/killed") == {"sent": len(ids)}
    _wait_acked(clean_redis, stream)
    by_token: dict[str, int] = apns_simulator.counters()["by_token"]
    assert set(by_token) == set(tokens)  # APNs saw every notification
    duplicates = sum(count - 1 for count in by_token.values())
    message = f"SIGKILL at {at_kill} final, {held} held unacknowledged: APNs saw {duplicates} notifications twice"
    log.warning(message)
    print(f"\n{message}")
    assert duplicates <= WINDOW, message
    assert second.alive()


def test_postgresql_restart_mid_run_loses_nothing(
    launch_sender: Callable[[], SenderProcess], clean_db: Engine, clean_redis: redis.Redis,
    apns_simulator: SimulatorProcess, postgres_server: PostgresServer,
) -> None:  # fmt: skip
    ids = enqueue(clean_db, clean_redis, apns_simulator, [f"{i:064x}" for i in range(10_000)], with_devices=True)
    sender = launch_sender()
    _wait_final(clean_db, 500, 60, sender)
    postgres_server.restart()
    assert final_count(clean_db) < len(ids), "the sender finished before PostgreSQL went away"
    _wait_final(clean_db, len(ids), 90, sender)

    assert statuses(clean_db) == {"sent": len(ids)}
    _wait_acked(clean_redis, stream_keys_of(apns_simulator).transactional_stream)
    assert sender.alive(), sender.output[-3000:]
    code, seconds = sender.terminate()
    assert code == 0, sender.output[-3000:]
    assert seconds < GRACE + 5


def test_redis_restart_mid_run_loses_nothing(
    launch_sender: Callable[[], SenderProcess], clean_db: Engine, clean_redis: redis.Redis,
    apns_simulator: SimulatorProcess, redis_server: RedisServer,
) -> None:  # fmt: skip
    ids = enqueue(clean_db, clean_redis, apns_simulator, [f"{i:064x}" for i in range(10_000)])
    sender = launch_sender()
    _wait_final(clean_db, 500, 60, sender)
    redis_server.restart()  # SIGTERM: a clean shutdown that writes the append-only file, then the same port
    assert final_count(clean_db) < len(ids), "the sender finished before Redis went away"
    _wait_final(clean_db, len(ids), 90, sender)

    assert statuses(clean_db) == {"sent": len(ids)}
    with redis.Redis.from_url(redis_server.url) as client:  # the fixture's connection died with the server
        _wait_acked(client, stream_keys_of(apns_simulator).transactional_stream)
    assert sender.alive(), sender.output[-3000:]
    code, _ = sender.terminate()
    assert code == 0, sender.output[-3000:]


def test_a_hung_postgresql_is_noticed_within_its_bound_and_every_record_lands_after_it(
    apns_simulator: SimulatorProcess, tmp_path: Path
) -> None:
    """SIGSTOP of PostgreSQL mid-run (its own server: the session's is shared): the sender's writes give up
    within the bound and are retried, and once it runs again every record is final, each sent once."""
    with private_postgres() as (postgres, url), private_redis() as redis_server:
        engine = make_engine(url)
        client = redis.Redis.from_url(redis_server.url)
        try:
            ids = enqueue(engine, client, apns_simulator, [f"{i:064x}" for i in range(5_000)], with_devices=True)
            sender = SenderProcess(_env(apns_simulator, url, redis_server.url), tmp_path, "hung")
            try:
                _wait_final(engine, 300, 60, sender)
                postgres.hang()
                hung_at = time.monotonic()
                try:
                    while "failed, retrying" not in sender.output and time.monotonic() - hung_at < 15:
                        time.sleep(0.1)
                    noticed = time.monotonic() - hung_at
                    time.sleep(max(0.0, 10 - noticed))  # hung longer than any one wait may last
                finally:
                    postgres.resume()
                log.info("the sender noticed the hung store after %.1f s", noticed)
                # At worst a liveness ping that gets no answer, then a new connection that cannot be made.
                assert noticed <= Bounds().answer + Bounds().connect + 1, sender.output[-3000:]
                assert final_count(engine) < len(ids), "the sender finished before PostgreSQL hung"
                _wait_final(engine, len(ids), 90, sender)
                assert statuses(engine) == {"sent": len(ids)}
                _wait_acked(client, stream_keys_of(apns_simulator).transactional_stream)
                assert sender.alive(), sender.output[-3000:]
                code, _ = sender.terminate()
                assert code == 0, sender.output[-3000:]
            finally:
                if sender.alive():
                    sender.kill()
        finally:
            client.close()
            engine.dispose()


def test_sigterm_drains_within_grace_and_a_second_sender_finishes(
    launch_sender: Callable[[], SenderProcess], clean_db: Engine, clean_redis: redis.Redis,
    apns_simulator: SimulatorProcess,
) -> None:  # fmt: skip
    apns_simulator.set_faults(latency_ms=20.0, rate_503=0.05)  # answers take a while; some go to the retry set
    ids = enqueue(clean_db, clean_redis, apns_simulator, [f"{i:064x}" for i in range(8000)])
    first = launch_sender()
    _wait_final(clean_db, 1000, 60, first)
    code, seconds = first.terminate()
    assert code == 0, first.output[-3000:]
    assert seconds < GRACE + 5  # the drain fits the grace period (plus interpreter shutdown)

    credential = stream_keys_of(apns_simulator)
    stream = credential.transactional_stream
    assert clean_redis.xpending(stream, CONSUMER_GROUP)["pending"] == 0  # drained: nothing left for others to claim
    with clean_db.connect() as connection:
        waiting = set(
            connection.execute(select(Notification.id).where(Notification.status.notin_(FINAL_STATUSES))).scalars()
        )
    entries: list[tuple[bytes, dict[bytes, bytes]]] = clean_redis.xrange(stream)  # type: ignore[assignment]
    members: list[bytes] = clean_redis.zrange(credential.retries, 0, -1)  # type: ignore[assignment]
    queued = {QueuedNotification.decode(fields).id for _, fields in entries}
    retries = {_retry_id(member) for member in members}
    assert waiting, "the first sender finished before SIGTERM"
    assert waiting <= queued | retries  # every notification not final is still queued: none lost

    second = launch_sender()
    _wait_final(clean_db, len(ids), 90, second)
    assert statuses(clean_db) == {"sent": len(ids)}


def _retry_id(member: bytes) -> uuid.UUID:
    _stream, version, body, _nonce = member.split(b"\x1f")
    return QueuedNotification.decode({b"v": version, b"n": body}).id
