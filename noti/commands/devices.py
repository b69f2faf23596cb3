"""``noti devices import``: an audience from a CSV or JSON-lines file, streamed in batches to a gateway's bulk route."""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import click
import httpx
import orjson

Format = Literal["csv", "jsonl"]
# The fields of noti.gateway.schemas.DeviceIn (a test keeps them equal): not imported, since the
# gateway's models would double the command's start-up time.
COLUMNS = ("device_token", "app", "platform", "owner", "tags", "is_active")
BATCH_MAX = 10_000  # the bulk route's limit
_EXTENSIONS: dict[str, Format] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_RETRIED = frozenset({429, 502, 503, 504})
_ATTEMPTS = 6


class ImportFailed(click.ClickException):
    """The import cannot go on (the gateway refuses the key, or cannot be reached)."""


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    message: str


@dataclass(slots=True)
class Batch:
    """Devices read from the file, with the line each came from, and the lines already found invalid."""

    devices: list[Any] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    end: int = 0  # bytes of the file read when the batch was complete


@dataclass(slots=True)
class Totals:
    created: int = 0
    updated: int = 0
    failed: int = 0

    @property
    def imported(self) -> int:
        return self.created + self.updated


def file_format(path: str, given: str | None, head: bytes) -> Format:
    """The format to read: as given, else by the file's extension, else by its first byte (``{`` is JSON lines)."""
    if given is not None:
        return "csv" if given == "csv" else "jsonl"
    by_extension = _EXTENSIONS.get(Path(path).suffix.lower()) if path != "-" else None
    if by_extension is not None:
        return by_extension
    return "jsonl" if head.lstrip().startswith(b"{") else "csv"


def csv_columns(header: list[str]) -> list[str]:
    """The header's column names, checked against the device fields (raises click.UsageError)."""
    names = [name.strip() for name in header]
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise click.UsageError(f"CSV column {unknown[0]!r} is not a device field; the columns are {', '.join(COLUMNS)}")
    if "device_token" not in names:
        raise click.UsageError(f"the CSV header has no device_token column; the columns are {', '.join(COLUMNS)}")
    if len(set(names)) < len(names):
        raise click.UsageError("the CSV header names a column twice")
    return names


def _tags(cell: str) -> Any:
    if cell.startswith("["):
        return orjson.loads(cell)  # a JSON array; anything else is the gateway's to refuse
    return [tag.strip() for tag in cell.split(",") if tag.strip()]


def csv_devices(text: IO[str]) -> Iterator[tuple[int, Any | LineError]]:
    """(line, device or why the line is not one) for each record: empty cells are left out, tags are a JSON array or
    names separated by commas."""
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        return
    columns = csv_columns(header)
    width = len(columns)
    line = reader.line_num
    for cells in reader:
        start, line = line + 1, reader.line_num
        if not cells:
            continue
        if len(cells) != width:
            yield start, LineError(start, f"{len(cells)} cells where the header has {width} columns")
            continue
        device = {name: cell for name, cell in zip(columns, cells, strict=True) if cell != ""}
        if "tags" in device:
            try:
                device["tags"] = _tags(device["tags"])
            except orjson.JSONDecodeError:
                yield start, LineError(start, "tags: not a JSON array (or names separated by commas)")
                continue
        yield start, device


def jsonl_devices(data: IO[bytes]) -> Iterator[tuple[int, Any | LineError]]:
    """(line, device or why the line is not one) for each line that is not blank."""
    for number, raw in enumerate(data, 1):
        if not raw.strip():
            continue
        try:
            device = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield number, LineError(number, f"not JSON: {exc.msg}")
            continue
        if not isinstance(device, dict):
            yield number, LineError(number, "not a JSON object (one device per line)")
            continue
        yield number, device


def batches(items: Iterator[tuple[int, Any | LineError]], size: int, position: Any, app: str | None) -> Iterator[Batch]:
    """The devices in batches of ``size`` (a batch's invalid lines ride along with it)."""
    batch = Batch()
    for line, item in items:
        if isinstance(item, LineError):
            batch.errors.append(item)
            continue
        if app is not None:
            item.setdefault("app", app)
        batch.devices.append(item)
        batch.lines.append(line)
        if len(batch.devices) >= size:
            batch.end = position()
            yield batch
            batch = Batch()
    if batch.devices or batch.errors:
        batch.end = position()
        yield batch


def _problem(item: Mapping[str, Any], index: int) -> str:
    """One device's problems as the gateway told them, without the request's location of it."""
    prefix = f"body.devices.{index}"
    parts = []
    for error in item.get("errors") or ():
        where = str(error.get("field", "")).removeprefix(prefix).lstrip(".")
        parts.append(f"{where}: {error.get('message')}" if where else str(error.get("message")))
    return "; ".join(parts) or str(item.get("detail", "invalid"))


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]


class Gateway:
    """The bulk registration route of one gateway, retried when it is busy or briefly away."""

    def __init__(self, url: str, api_key: str, timeout: float = 120) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=8),
        )

    def register(self, body: bytes) -> dict[str, Any]:
        """The gateway's answer to one bulk registration (a DeviceBulkOut)."""
        delay = 0.5
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                response = self.http.post("/api/devices/bulk/", content=body)
            except httpx.TransportError as exc:
                if attempt == _ATTEMPTS:
                    raise ImportFailed(f"cannot reach the gateway at {self.url}: {exc}") from None
            else:
                if response.status_code == 200:
                    answer: dict[str, Any] = orjson.loads(response.content)
                    return answer
                if response.status_code not in _RETRIED or attempt == _ATTEMPTS:
                    raise ImportFailed(f"the gateway refused the import ({response.status_code}): {_detail(response)}")
                delay = max(delay, float(response.headers.get("Retry-After", 0) or 0))
            time.sleep(delay)
            delay = min(delay * 2, 10)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.http.close()


class Progress:
    """A progress line redrawn in place on a terminal, or a plain line every few seconds otherwise."""

    PLAIN_EVERY = 2.0

    def __init__(self, total_bytes: int | None, tty: bool) -> None:
        self.total = total_bytes
        self.tty = tty
        self.started = self.shown = time.monotonic()

    def rate(self, totals: Totals) -> float:
        return (totals.imported + totals.failed) / max(time.monotonic() - self.started, 1e-9)

    def update(self, done_bytes: int, totals: Totals) -> None:
        now = time.monotonic()
        if not self.tty and now - self.shown < self.PLAIN_EVERY:
            return
        self.shown = now
        counts = f"{totals.imported:,} imported, {totals.failed:,} failed, {self.rate(totals):,.0f}/s"
        if not self.tty:
            click.echo(counts)
            return
        line = counts
        if self.total:
            share = min(done_bytes / self.total, 1.0)
            bar = "#" * int(share * 30)
            elapsed = now - self.started
            eta = elapsed / share - elapsed if share > 0 else 0
            line = f"[{bar:<30}] {share:4.0%}  {counts}  ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        self._draw(line)

    def clear(self) -> None:
        if self.tty:
            self._draw("")

    @staticmethod
    def _draw(line: str) -> None:
        # Written as is: click.echo would strip the erase-line sequence when it doubts the terminal.
        sys.stdout.write(f"\r\x1b[K{line}")
        sys.stdout.flush()


def _open(path: str) -> tuple[io.BufferedReader, int | None]:
    if path == "-":
        stdin: Any = sys.stdin.buffer
        return (stdin if isinstance(stdin, io.BufferedReader) else io.BufferedReader(stdin)), None
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="FILE") from None
    size = os.fstat(handle.fileno()).st_size
    return handle, size or None


@click.group("devices")
def devices() -> None:
    """Devices: move an audience in from another service."""


@devices.command("import")
@click.argument("file", metavar="FILE")
@click.option("--format", "given_format", type=click.Choice(["csv", "jsonl"]), help="Default: by extension.")
@click.option("--app", help="The app (bundle id) of devices that name none.")
@click.option("--gateway", envvar="NOTI_URL", show_envvar=True, help="The gateway, e.g. http://127.0.0.1:8000.")
@click.option("--api-key", envvar="NOTI_API_KEY", show_envvar=True, help="A gateway API key with send scope.")
@click.option("--batch-size", type=click.IntRange(1, BATCH_MAX), default=5_000, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 8), default=2, show_default=True, help="Batches in flight.")
def import_devices(
    file: str, given_format: str | None, app: str | None, gateway: str | None, api_key: str | None,
    batch_size: int, concurrency: int,
) -> None:  # fmt: skip
    """Register or update the devices in FILE (CSV or JSON lines; - reads stdin) through a gateway.

    CSV: a header row naming the columns, of device_token, app, platform, owner, tags
    (a JSON array, or names separated by commas) and is_active; empty cells take the
    default. JSON lines: one device object per line, with those fields. A device whose
    app and token are already registered is updated. Any size is streamed in batches to
    POST /api/devices/bulk/. Each invalid line is reported with its number; the valid
    ones are imported, and the exit status is 1 if any line failed.
    """
    if not gateway or not api_key:
        raise click.UsageError("give --gateway and --api-key (or set NOTI_URL and NOTI_API_KEY)")
    buffered, size = _open(file)
    head = buffered.peek(64)[:64]
    fmt = file_format(file, given_format, head)
    if fmt == "jsonl" and head.lstrip().startswith(b"["):
        raise click.UsageError(
            f"{file} is one JSON array: give a device object per line (jq -c '.[]' turns it into that)"
        )

    def position() -> int:  # bytes read so far, for the progress bar (a pipe has no size and no position)
        return buffered.tell() if size else 0

    if fmt == "csv":
        text = io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")
        items = csv_devices(text)
    else:
        items = jsonl_devices(buffered)
    progress = Progress(size, sys.stdout.isatty())
    totals = Totals()
    client = Gateway(gateway, api_key)
    in_flight: deque[tuple[Batch, Future[dict[str, Any]]]] = deque()

    def settle(batch: Batch, answer: dict[str, Any]) -> None:
        errors = list(batch.errors)
        for item in answer.get("errors", ()):
            errors.append(LineError(batch.lines[item["index"]], _problem(item, item["index"])))
        totals.created += int(answer.get("created", 0))
        totals.updated += int(answer.get("updated", 0))
        totals.failed += len(errors)
        if errors:
            progress.clear()
        for error in sorted(errors, key=lambda e: e.line):
            click.echo(f"line {error.line}: {error.message}", err=True)
        progress.update(batch.end, totals)

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            try:
                for batch in batches(items, batch_size, position, app):
                    if batch.devices:
                        answer = pool.submit(client.register, orjson.dumps({"devices": batch.devices}))
                        batch.devices = []  # sent: only the line numbers are needed from here on
                    else:  # only invalid lines: reported in turn, after the batches before them
                        answer = Future()
                        answer.set_result({})
                    in_flight.append((batch, answer))
                    while len(in_flight) > concurrency:
                        done, future = in_flight.popleft()
                        settle(done, future.result())
                while in_flight:
                    done, future = in_flight.popleft()
                    settle(done, future.result())
            except BaseException:
                for _, future in in_flight:
                    future.cancel()
                raise
    except UnicodeDecodeError as exc:
        progress.clear()
        raise click.ClickException(f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        progress.clear()
        raise click.ClickException(f"{file} is not CSV: {exc}") from None
    except click.ClickException:
        progress.clear()
        if totals.imported:
            click.echo(f"{totals.imported:,} devices were imported before this error", err=True)
        raise
    finally:
        client.close()
        if file != "-":
            buffered.close()
    progress.clear()
    elapsed = time.monotonic() - progress.started
    click.echo(
        f"imported {_count(totals.imported, 'device')} ({totals.created:,} new, {totals.updated:,} updated) "
        f"in {elapsed:.1f} s ({totals.imported / max(elapsed, 1e-9):,.0f}/s); "
        f"{_count(totals.failed, 'line')} failed"
    )
    if totals.failed:
        sys.exit(1)
