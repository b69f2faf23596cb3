"""Logging: identical warnings and errors repeated within a window are written once, then counted.

An outage makes every request log the same line (``answering 503: the database unreachable``),
and a failing step retried in a loop the same traceback: thousands of lines that say one
thing and push everything else out of the log. The first of a kind is written at once; its
repeats within ``window`` seconds are only counted, and a line "... (repeated N times in the
last W s)" follows when the window ends (written with the next line logged after it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

WINDOW = 10.0  # seconds
_SUMMARY = "_noti_repeats"  # attribute marking a summary record, which passes the filter


@dataclass(slots=True)
class _Seen:
    kind: tuple[object, ...]
    record: logging.LogRecord  # the first of its kind in this window
    since: float
    repeats: int = 0


def _kind(record: logging.LogRecord) -> tuple[object, ...]:
    failure = record.exc_info[1] if record.exc_info else None
    return (record.name, record.levelno, record.getMessage(), type(failure), str(failure) if failure else None)


class RepeatFilter(logging.Filter):
    """A handler filter collapsing identical records of level ``level`` and above within ``window`` seconds."""

    def __init__(self, handler: logging.Handler, *, window: float = WINDOW, level: int = logging.WARNING) -> None:
        super().__init__()
        self._handler, self.window, self.level = handler, window, level
        self._seen: dict[tuple[object, ...], _Seen] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY, False):
            return True
        now = time.monotonic()
        with self._lock:
            ended: list[_Seen] = []
            for seen in self._seen.values():  # oldest first: a kind is only added again once removed
                if now - seen.since < self.window:
                    break
                ended.append(seen)
            for seen in ended:
                del self._seen[seen.kind]
            passes = True
            if record.levelno >= self.level:
                earlier = self._seen.get(kind := _kind(record))
                if earlier is None:
                    self._seen[kind] = _Seen(kind, record, now)
                else:
                    earlier.repeats += 1
                    passes = False
        for seen in ended:
            if seen.repeats:
                self._handler.handle(self._summary(seen, now))
        return passes

    def _summary(self, seen: _Seen, now: float) -> logging.LogRecord:
        first = seen.record
        summary = logging.LogRecord(
            first.name, first.levelno, first.pathname, first.lineno,
            "%s (repeated %d times in the last %.0f s)", (first.getMessage(), seen.repeats, now - seen.since), None,
        )  # fmt: skip
        setattr(summary, _SUMMARY, True)
        return summary


def collapse_repeats(loggers: Iterable[str] = ("", "uvicorn"), *, window: float = WINDOW) -> None:
    """Put a ``RepeatFilter`` on every handler of ``loggers`` (the root, uvicorn's) that has none yet."""
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RepeatFilter) for f in handler.filters):
                handler.addFilter(RepeatFilter(handler, window=window))
