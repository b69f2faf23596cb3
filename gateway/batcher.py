"""A micro-batcher: concurrent submissions that arrive while one batch is handled go out together as the next.

One batch is handled at a time, so under load batches grow by themselves and each costs one
round trip whatever its size; an idle batcher hands a lone submission on at once. Each
submitter gets its own answer: a value, or the exception meant for it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Coalesces ``submit`` calls into batches for ``handle``, which answers each item in order."""

    def __init__(
        self, handle: Callable[[list[T]], Awaitable[Sequence[R | Exception]]], *, max_size: int, name: str
    ) -> None:
        self._handle = handle
        self._max_size = max_size
        self._name = name
        self._waiting: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
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
            await self._answer([self._waiting.get_nowait() for _ in range(count)])

    async def submit(self, item: T) -> R:
        """``item``'s answer once its batch is handled; raises the exception meant for it."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.put_nowait((item, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._waiting.get()]
            if self._handling is not None:  # wait for the batch in hand; meanwhile more arrive
                await asyncio.gather(self._handling, return_exceptions=True)
            while len(batch) < self._max_size and not self._waiting.empty():
                batch.append(self._waiting.get_nowait())
            # A task of its own: stopping the runner must not cancel a batch half written.
            self._handling = asyncio.create_task(self._answer(batch))

    async def _answer(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            answers = await self._handle([item for item, _ in batch])
        except Exception as exc:  # the whole batch failed (e.g. the store is down): every submitter hears it
            answers = [exc] * len(batch)
        except BaseException:  # cancelled: no submitter may wait for ever
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # the submitter went away
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)
