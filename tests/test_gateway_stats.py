"""``/api/notifications/stats/``: counts and rates from the hourly roll-up plus exact edge hours."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from gateway_support import APP
from sqlalchemy import Engine

from noti.gateway import stats
from noti.store import records
from noti.store.models import NotificationStatus
from noti.store.records import RecordUpdate

BASE = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
# minutes after BASE, final status (None: still in flight)
HISTORY: list[tuple[int, NotificationStatus | None]] = [
    (5, NotificationStatus.SENT),
    (50, NotificationStatus.INVALID_TOKEN),
    (65, NotificationStatus.SENT),
    (70, NotificationStatus.FAILED),
    (90, None),
    (125, NotificationStatus.SENT),
    (170, NotificationStatus.SENT),
    (185, None),
]


def seed(engine: Engine) -> None:
    """Records created at known times, their outcomes applied (so the roll-up is what the writers made)."""
    with engine.begin() as connection:
        for minutes, final in HISTORY:
            id = uuid.uuid4()
            row = {"id": id, "device_token": "ab" * 32, "app": APP, "created_at": BASE + timedelta(minutes=minutes)}
            records.insert_notifications(connection, [row])
            if final is not None:
                records.apply_outcomes(connection, [RecordUpdate(id, final)])


def expected(since: int | None, until: int | None) -> dict[str, Any]:
    chosen = [f for m, f in HISTORY if (since is None or m >= since) and (until is None or m < until)]
    finals = Counter(f.value for f in chosen if f is not None)
    finished = sum(finals.values())
    return {
        "total": len(chosen),
        "sent": finals["sent"],
        "failed": finals["failed"],
        "invalid_token": finals["invalid_token"],
        "in_flight": len(chosen) - finished,
        "success_rate": round(finals["sent"] / finished, 6) if finished else None,
        "invalid_token_rate": round(finals["invalid_token"] / finished, 6) if finished else None,
    }


def at(minutes: int) -> str:
    return (BASE + timedelta(minutes=minutes)).isoformat()


async def test_stats_overall_and_for_windows_with_partial_and_whole_hours(
    client: httpx.AsyncClient, clean_db: Engine
) -> None:
    seed(clean_db)
    overall = await client.get("/api/notifications/stats/")
    assert overall.status_code == 200, overall.text
    assert overall.json()["overall"] == expected(None, None)
    assert overall.json()["window"] is None

    windows = [(0, 60), (30, 130), (50, 65), (60, 180), (71, 200), (None, 70), (120, None), (300, 400)]
    for since, until in windows:
        params = {k: at(v) for k, v in (("since", since), ("until", until)) if v is not None}
        response = await client.get("/api/notifications/stats", params=params)
        assert response.status_code == 200
        assert response.json()["window"] == expected(since, until), (since, until)
        assert response.json()["overall"] == expected(None, None)

    backwards = await client.get("/api/notifications/stats/", params={"since": at(60), "until": at(0)})
    assert backwards.status_code == 422


def test_window_edges_are_whole_hours_or_exact_ranges() -> None:
    moment = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
    assert stats.ceil_hour(moment) == datetime(2026, 3, 1, 11, tzinfo=UTC)
    assert stats.ceil_hour(datetime(2026, 3, 1, 11, tzinfo=UTC)) == datetime(2026, 3, 1, 11, tzinfo=UTC)
    assert stats.counts({"created": 10, "sent": 6, "invalid_token": 2}).model_dump() == {
        "total": 10, "sent": 6, "failed": 0, "invalid_token": 2, "in_flight": 2,
        "success_rate": 0.75, "invalid_token_rate": 0.25,
    }  # fmt: skip
