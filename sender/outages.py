"""Riding out a Redis or database outage: an idempotent step is repeated until it works, nothing dropped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_PAUSE = 0.2  # seconds after the first failure; doubles after each further one
LONGEST_PAUSE = 5.0


async def keep_trying(
    step: Callable[[], Awaitable[T]],
    errors: tuple[type[Exception], ...],
    what: str,
    *,
    detail: Callable[[Exception], object] = str,
) -> T:
    """Await ``step()`` until it raises none of ``errors``; ``what`` names the step in the warning each failure logs.

    Only for steps that are safe to repeat. It never gives up: the caller bounds it (a grace
    period cancels it), because giving up would lose an outcome or an acknowledgement.
    """
    pause = FIRST_PAUSE
    while True:
        try:
            return await step()
        except errors as exc:
            log.warning("%s failed, retrying in %.1fs: %s", what, pause, detail(exc))
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)
