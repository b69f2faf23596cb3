"""The admin's landing page: the API's stats (``noti.gateway.stats``), the last 24 hours, queue depths."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from starlette.concurrency import run_in_threadpool

from noti.gateway import stats
from noti.gateway.context import Gateway
from noti.gateway.metrics import CAMPAIGN_STREAMS, queue_depths
from noti.gateway.schemas import Counts
from noti.store.models import utcnow

HOURS = 24


@dataclass(frozen=True, slots=True)
class Bar:
    """One hour of the chart: its counts and each part's height in % of the busiest hour."""

    hour: datetime
    counts: Counts
    sent: float
    failed: float
    invalid_token: float
    in_flight: float

    @property
    def label(self) -> str:
        return f"{self.hour:%H:00}"

    @property
    def summary(self) -> str:
        c = self.counts
        return (
            f"{self.hour:%Y-%m-%d %H:00} UTC: {c.total} created, {c.sent} sent, {c.failed} failed, "
            f"{c.invalid_token} invalid token, {c.in_flight} in flight"
        )


def bars(hours: list[tuple[datetime, Counts]]) -> list[Bar]:
    """The chart's bars, scaled so the busiest hour fills the height."""
    peak = max((max(c.total, c.sent + c.failed + c.invalid_token) for _, c in hours), default=0) or 1

    def part(value: int) -> float:
        return round(100 * value / peak, 2)

    return [Bar(hour, c, part(c.sent), part(c.failed), part(c.invalid_token), part(c.in_flight)) for hour, c in hours]


def percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f} %"


@dataclass(frozen=True, slots=True)
class Dashboard:
    overall: Counts
    last_day: Counts
    bars: list[Bar]
    queues: dict[str, int]
    at: datetime

    @property
    def peak(self) -> int:
        """The busiest hour's notifications: the chart's full height."""
        return max((bar.counts.total for bar in self.bars), default=0)


async def load(state: Gateway) -> Dashboard:
    """Everything the dashboard shows, from the roll-up and Redis (no scan of the records)."""
    now = utcnow()

    def read() -> tuple[Counts, Counts, list[tuple[datetime, Counts]]]:
        with state.engine.connect() as connection:
            overall = stats.counts(stats.window_totals(connection, None, None))
            hours = stats.hourly(connection, now, HOURS)
            last_day = stats.counts(stats.window_totals(connection, hours[0][0], None))
        return overall, last_day, hours

    overall, last_day, hours = await run_in_threadpool(read)
    queues = {**await queue_depths(state.redis), **await queue_depths(state.redis, CAMPAIGN_STREAMS)}
    return Dashboard(overall=overall, last_day=last_day, bars=bars(hours), queues=queues, at=now)
