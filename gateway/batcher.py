"""A micro-batcher: concurrent submissions that arrive while one batch is handled go out together as the next.

One batch is handled at a time, so under load batches grow by themselves and each costs one
round trip whatever its size; an idle batcher hands a lone submission on at once. Each
submitter gets its own answer: a value, or the exception meant for it alone.

A batch that failed as a whole with an outage (``is_outage``) answers the submissions that
waited through it with the same exception, at once: they would otherwise wait for the next
batch to meet the same outage, and twice as long for their answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Coalesces ``submit`` calls into batches for ``handle``, which answers each item in order."""

    def __init__(
        self,
        handle: Callable[[list[T]], Awaitable[Sequence[R | Exception]]],
        *,
        max_size: int,
        name: str,
        is_outage: Callable[[Exception], bool] = lambda _exc: False,
    ) -> None:
        self._handle = handle
        self._max_size = max_size
        self._name = name
        self._is_outage = is_outage
        self._outage: tuple[float, Exception] | None = None  # when the last batch met an outage, and what it was
        self._waiting: asyncio.Queue[tuple[T, asyncio.Future[R], float]] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._handling: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Stop batching; what was submitted by now is still handled and answered."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._handling is not None:
            await asyncio.gather(self._handling, return_exceptions=True)
        while not self._waiting.empty():
            count = min(self._max_size, self._waiting.qsize())
            await self._answer([self._waiting.get_nowait()[:2] for _ in range(count)])

    async def submit(self, item: T) -> R:
        """``item``'s answer once its batch is handled; raises the exception meant for it."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.put_nowait((item, future, time.monotonic()))
        return await future

    async def _run(self) -> None:
        while True:
            waiting = [await self._waiting.get()]
            if self._handling is not None:  # wait for the batch in hand; meanwhile more arrive
                await asyncio.gather(self._handling, return_exceptions=True)
            while len(waiting) < self._max_size and not self._waiting.empty():
                waiting.append(self._waiting.get_nowait())
            batch = [(item, future) for item, future, _ in waiting]
            if self._outage is not None:
                since, exc = self._outage
                waited = [(item, future) for item, future, submitted in waiting if submitted < since]
                self._settle(waited, [exc] * len(waited))
                batch = [(item, future) for item, future, submitted in waiting if submitted >= since]
                if not batch:
                    continue
            # A task of its own: stopping the runner must not cancel a batch half written.
            self._handling = asyncio.create_task(self._answer(batch))

    async def _answer(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            answers = await self._handle([item for item, _ in batch])
        except Exception as exc:  # the whole batch failed (e.g. the store is down): every submitter hears it
            answers = [exc] * len(batch)
            self._outage = (time.monotonic(), exc) if self._is_outage(exc) else None
        except BaseException:  # cancelled: no submitter may wait for ever
            for _, future in batch:
                future.cancel()
            raise
        else:
            self._outage = None
        self._settle(batch, answers)

    @staticmethod
    def _settle(batch: list[tuple[T, asyncio.Future[R]]], answers: Sequence[R | Exception]) -> None:
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # the submitter went away
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)
