"""Identical warnings and errors are logged once, then counted; tracebacks of client errors never reach the log."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import Engine

from harness.gateway import APP, Keys, gateway_settings
from noti.gateway.app import create_app
from noti.logs import RepeatFilter, collapse_repeats

TOKEN = "ab" * 32


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of the test's own writing to a string, repeats collapsed within 0.3 s."""
    logger = logging.getLogger("noti.test.repeats")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RepeatFilter(handler, window=0.3))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, out
    logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def lines(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines() if line.startswith(("WARNING", "ERROR", "INFO"))]


def test_an_error_repeated_within_the_window_is_written_once_then_counted(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = log
    for _ in range(100):
        logger.error("the store refused the outcome of %s", "n-1")
    assert lines(out) == ["ERROR the store refused the outcome of n-1"]
    time.sleep(0.35)
    logger.error("the store refused the outcome of %s", "n-1")
    assert lines(out) == [
        "ERROR the store refused the outcome of n-1",
        "ERROR the store refused the outcome of n-1 (repeated 99 times in the last 0 s)",
        "ERROR the store refused the outcome of n-1",  # a new window: written at once again
    ]


def test_different_lines_and_info_lines_are_all_written(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    for n in range(3):
        logger.warning("retrying step %d", n)
        logger.info("progress")
    assert lines(out) == ["WARNING retrying step 0", "INFO progress", "WARNING retrying step 1", "INFO progress",
                          "WARNING retrying step 2", "INFO progress"]  # fmt: skip


def test_one_traceback_for_a_failure_repeated_in_a_loop(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    for _ in range(50):
        try:
            raise ConnectionError("no route to host")
        except ConnectionError:
            logger.exception("writing outcomes failed")
    assert out.getvalue().count("Traceback") == 1
    assert lines(out) == ["ERROR writing outcomes failed"]


def test_collapse_repeats_adds_one_filter_per_handler() -> None:
    logger = logging.getLogger("noti.test.install")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        collapse_repeats([logger.name])
        collapse_repeats([logger.name])
        assert sum(isinstance(f, RepeatFilter) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)


async def test_an_outage_answered_503_a_hundred_times_logs_one_line_and_its_count(
    clean_db: Engine, database_url: str, keys: Keys
) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RepeatFilter(handler, window=1.0))
    logger = logging.getLogger("noti.gateway")
    logger.addHandler(handler)
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    app = create_app(gateway_settings(database_url, "redis://127.0.0.1:1/0"), engine=clean_db, redis=dead)
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw",
            headers={"Authorization": f"Bearer {keys.sender}"},
        ) as http:  # fmt: skip
            await http.post("/api/devices/", json={"device_token": TOKEN, "app": APP})
            answers = [await http.post("/api/notifications/", json={"device_token": TOKEN, "body": "x"})
                       for _ in range(100)]  # fmt: skip
            await asyncio.sleep(1.1)
            await http.post("/api/notifications/", json={"device_token": TOKEN, "body": "x"})
    finally:
        logger.removeHandler(handler)
        await dead.aclose()
    assert {answer.status_code for answer in answers} == {503}
    written = out.getvalue().splitlines()
    line = "answering 503: Redis unreachable (ConnectionError)"
    summary = re.compile(rf"{re.escape(line)} \(repeated (\d+) times in the last \d+ s\)")
    counted = [int(found[1]) for found in map(summary.fullmatch, written) if found]
    assert written[0] == line and len(written) <= 10  # one a second at most, not one per request
    assert written.count(line) + sum(counted) == 101  # every 503 is counted: written or in a count
