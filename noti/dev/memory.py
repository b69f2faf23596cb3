"""Memory a dev stack gives back: few malloc arenas, and a periodic trim after bursts."""

from __future__ import annotations

import os
from typing import Any


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


async def return_idle_memory(interval: float = 30.0) -> None:
    """Give freed memory back to the system now and then, so a dev stack shrinks again after a burst."""
    import asyncio
    import gc

    libc = _glibc()
    if libc is None:
        return
    while True:
        await asyncio.sleep(interval)
        gc.collect()
        libc.malloc_trim(0)
