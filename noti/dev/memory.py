"""Memory a dev stack gives back: few malloc arenas, and after a burst, once it is quiet, what the burst left."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("noti.dev")

CHECK_SECONDS = 5.0  # how often the stack looks whether it went quiet
RELEASE_AFTER_CPU_SECONDS = 1.0  # work since the last release that makes another one worth its cost
QUIET_SHARE = 0.02  # an interval that used at most this share of a core is quiet (idle costs under 1 %)


def _glibc() -> Any:
    """glibc, when this process runs on it (the memory calls below are glibc's), else None."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or os.uname().sysname != "Linux":
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def limit_malloc_arenas(count: int = 2) -> None:
    """Few malloc arenas: the embedded Redis' threads would each keep one, and freed memory in it."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-8, count)  # M_ARENA_MAX


def release_due(work_since_release: float, last_interval_work: float, interval: float) -> bool:
    """Whether to give memory back now: enough CPU seconds of work since the last release, and now quiet."""
    return work_since_release >= RELEASE_AFTER_CPU_SECONDS and last_interval_work <= QUIET_SHARE * interval


def release_engine(engine: Any) -> None:
    """Drop a SQLite engine's pooled connections (each keeps a page cache) and its compiled statements.

    SQLAlchemy's statement cache keys hold the bound values of the statement first compiled: a
    bulk send's 10,000-token ``IN`` list stayed alive (and pinned the burst's pymalloc arenas).
    """
    engine.dispose()
    cache = getattr(engine, "_compiled_cache", None)
    if cache is not None:
        cache.clear()


def release_memory(compactors: Sequence[Callable[[], object]] = ()) -> None:
    """Compact what deletions left oversized, collect cycles and hand free heap pages back to the system."""
    for compact in compactors:
        compact()
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


async def return_idle_memory(compactors: Sequence[Callable[[], object]] = (), interval: float = CHECK_SECONDS) -> None:
    """Give a burst's memory back once the stack goes quiet after it; an idle stack does nothing at all.

    A periodic trim alone left half of a burst's growth behind: drained queues keep their tables,
    pooled SQLite connections their page caches. ``compactors`` release those (they run in a
    thread: they may wait for the embedded Redis' lock).
    """
    work = 0.0
    last = time.process_time()  # every thread's CPU: the embedded Redis works in its own
    while True:
        await asyncio.sleep(interval)
        now = time.process_time()
        used, last = now - last, now
        work += used
        if not release_due(work, used, interval):
            continue
        started = time.perf_counter()
        await asyncio.to_thread(release_memory, compactors)
        log.debug("gave memory back after %.1f s of work in %.0f ms", work, (time.perf_counter() - started) * 1000)
        last, work = time.process_time(), 0.0  # the release's own work is no burst
