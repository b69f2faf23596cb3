"""``noti campaign run``: a NotificationCampaign manifest run locally, with progress."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import click
import redis.asyncio as aioredis
import yaml
from redis.exceptions import RedisError

from noti.campaigns import CampaignError, CampaignSpec, FanOutResult, fan_out
from noti.campaigns import progress as campaign_progress
from noti.dev.datadir import DataDir, DevError
from noti.queue import CampaignProgress, StreamKeys
from noti.settings import get_settings
from noti.store.db import make_engine

PLAIN_EVERY = 2.0  # seconds between progress lines when stdout is not a terminal
QUIET_START = 1.0  # seconds before progress shows while fanning out: a re-run of a finished campaign says only that
RATE_WINDOW = 5.0  # seconds of samples the rate (and so the ETA) is measured over


@click.group("campaign")
def campaign() -> None:
    """Run NotificationCampaign manifests without a cluster."""


@campaign.command("run")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-dir", envvar="NOTI_DATA_DIR", default=".noti", show_default=True, help="The dev stack's data.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for the campaign to finish.")
def run(manifest: Path, data_dir: str, timeout: float) -> None:
    """Fan MANIFEST out to the running dev stack's sender and wait for every notification to finish.

    Shows a progress bar on a terminal, a progress line every few seconds otherwise.
    """
    try:
        spec = CampaignSpec.from_manifest(_load(manifest))
    except CampaignError as exc:
        raise click.ClickException(f"{manifest}: {exc}") from None
    try:
        stack = DataDir.at(data_dir).read_runtime()
    except DevError as exc:
        raise click.ClickException(str(exc)) from None
    if spec.credential != stack.credential:
        raise click.ClickException(
            f"spec.credentialRef.name is {spec.credential!r}, but the dev stack's credential is {stack.credential!r}"
        )
    credential = StreamKeys(f"default/{stack.credential}")  # the dev stack's embedded credential (its route)
    display: Display = BarDisplay(spec.name) if sys.stdout.isatty() else LineDisplay(spec.name)
    try:
        asyncio.run(_run(spec, credential, stack.app, stack.database_url, stack.redis_url, timeout, display))
    except (RedisError, OSError) as exc:
        raise click.ClickException(
            f"cannot reach the dev stack's queue at {stack.redis_url} ({exc}): is `noti dev` (pid {stack.pid}) running?"
        ) from None


class _ManifestLoader(yaml.SafeLoader):
    """YAML as kubectl reads it: a timestamp stays the string the apiserver's schema expects."""


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load(manifest: Path) -> dict[str, object]:
    try:
        loaded = yaml.load(manifest.read_text(), Loader=_ManifestLoader)
    except FileNotFoundError:
        raise CampaignError("the file does not exist") from None
    except yaml.YAMLError as exc:
        raise CampaignError(f"not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise CampaignError("the file must hold one NotificationCampaign mapping")
    return loaded


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the display shows at one moment."""

    total: int
    queued: int
    sent: int
    failed: int  # failed and invalid tokens: not delivered
    rate: float | None  # finished per second, None before it can be measured
    eta: float | None  # seconds

    @property
    def finished(self) -> int:
        return self.sent + self.failed


class Throughput:
    """Finished-per-second over the last few seconds, and the time left at that rate."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def snapshot(self, progress: CampaignProgress, total: int, now: float) -> Snapshot:
        finished = progress.finished
        self._samples.append((now, finished))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        rate, eta = rate_and_eta(list(self._samples), total)
        failed = progress.by_status.get("failed", 0) + progress.by_status.get("invalid_token", 0)
        return Snapshot(total, progress.queued, progress.by_status.get("sent", 0), failed, rate, eta)


def rate_and_eta(samples: list[tuple[float, int]], total: int) -> tuple[float | None, float | None]:
    """Rate from the oldest to the newest (time, finished) sample; ETA for what is left of ``total``."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return None, None
    (start, first), (end, last) = samples[0], samples[-1]
    rate = (last - first) / (end - start)
    left = max(total - last, 0)
    if left == 0:
        return rate, 0.0
    return rate, (left / rate if rate > 0 else None)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_line(name: str, snapshot: Snapshot) -> str:
    """One plain progress line, for logs and pipes."""
    rate = f"{snapshot.rate:.0f}/s" if snapshot.rate is not None else "?/s"
    return (
        f"{name}: {snapshot.finished}/{snapshot.total} finished (sent {snapshot.sent}, failed {snapshot.failed}), "
        f"queued {snapshot.queued}, {rate}, ETA {_duration(snapshot.eta)}"
    )


class Display(Protocol):
    def show(self, snapshot: Snapshot) -> None: ...
    def close(self, snapshot: Snapshot | None) -> None: ...


class LineDisplay:
    """A progress line every few seconds, and one when the campaign is done."""

    def __init__(self, name: str, every: float = PLAIN_EVERY) -> None:
        self.name, self.every = name, every
        self._last: float | None = None

    def show(self, snapshot: Snapshot) -> None:
        now = time.monotonic()
        if self._last is None or now - self._last >= self.every:
            self._last = now
            click.echo(progress_line(self.name, snapshot))

    def close(self, snapshot: Snapshot | None) -> None:
        if snapshot is not None and self._last is not None:  # the last state, unless nothing was ever shown
            click.echo(progress_line(self.name, snapshot))
        self._last = None


class BarDisplay:
    """A live progress bar on the terminal: sent, failed, total, rate and ETA."""

    def __init__(self, name: str) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[of]}"),
            TextColumn("[green]sent {task.fields[sent]}[/] [red]failed {task.fields[failed]}[/]"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            transient=False,
        )
        self._task = self._progress.add_task(name, total=None, of="0/?", sent=0, failed=0, rate="?/s", eta="?")
        self._started = False

    def show(self, snapshot: Snapshot) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        self._progress.update(
            self._task, total=snapshot.total or None, completed=snapshot.finished,
            of=f"{snapshot.finished}/{snapshot.total or '?'}", sent=snapshot.sent,
            failed=snapshot.failed, rate=f"{snapshot.rate:.0f}/s" if snapshot.rate is not None else "?/s",
            eta=_duration(snapshot.eta),
        )  # fmt: skip

    def close(self, snapshot: Snapshot | None) -> None:
        if not self._started:
            return
        if snapshot is not None:
            self.show(snapshot)
        self._progress.stop()
        self._started = False


def _queued_message(name: str, result: FanOutResult) -> str:
    plural = "notification" if result.total == 1 else "notifications"
    earlier = result.total - result.written
    resumed = f" ({earlier} of them by an earlier run)" if earlier else ""
    return f"{name}: {result.total} {plural} queued{resumed}"


def _summary(name: str, by_status: dict[str, int], total: int) -> str:
    return (
        f"{name}: total {total}, sent {by_status.get('sent', 0)}, failed {by_status.get('failed', 0)}, "
        f"invalid tokens {by_status.get('invalid_token', 0)}"
    )


async def _run(
    spec: CampaignSpec, credential: StreamKeys, app: str, database_url: str, redis_url: str, wait_seconds: float,
    display: Display,
) -> None:  # fmt: skip
    engine = make_engine(database_url, pool_size=get_settings().store.database_pool_size)
    redis = aioredis.Redis.from_url(redis_url)
    throughput = Throughput()
    snapshot: Snapshot | None = None
    fanning: asyncio.Task[FanOutResult] = asyncio.create_task(fan_out(engine, redis, credential, spec, app=app))
    try:
        started = time.monotonic()
        deadline = started + wait_seconds
        result: FanOutResult | None = None
        while True:
            fanned_out = fanning.done()  # before reading progress: a finished fan-out's counts are all in
            progress = await campaign_progress(engine, redis, spec.name)
            if fanned_out and result is None:
                result = fanning.result()
                if result.written == 0 and result.total and progress.finished >= result.total:
                    display.close(None)
                    click.echo(_already_done(spec.name, progress, result.total))
                    return
                if result.total == 0:
                    display.close(None)
                    click.echo(f"{spec.name}: no active device matches spec.audience; nothing to send")
                    return
                click.echo(_queued_message(spec.name, result))
            total = result.total if result is not None else progress.total
            snapshot = throughput.snapshot(progress, total, time.monotonic())
            if result is not None or time.monotonic() - started >= QUIET_START:
                display.show(snapshot)
            if result is not None and progress.finished >= result.total:
                display.close(snapshot)
                click.echo(_summary(spec.name, progress.by_status, result.total))
                return
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"{progress.finished} of {total} finished after {wait_seconds:.0f}s: is `noti dev` still running? "
                    "(--timeout waits longer)"
                )
            await asyncio.sleep(0.2)
    finally:
        display.close(snapshot)
        if not fanning.done():
            fanning.cancel()
        await asyncio.gather(fanning, return_exceptions=True)
        await redis.aclose()
        engine.dispose()


def _already_done(name: str, progress: CampaignProgress, total: int) -> str:
    by_status: dict[str, Any] = progress.by_status
    return (
        f"campaign {name} already completed: {by_status.get('sent', 0)} sent, {by_status.get('failed', 0)} failed, "
        f"{by_status.get('invalid_token', 0)} invalid tokens of {total}; nothing was sent again "
        "(give it another metadata.name to send it again)"
    )
