"""Sender replicas from the time a credential's backlog takes to drain, between its min and max.

The operator measures how fast the senders work the backlog off (notifications finished per
second, with how many senders ran). It asks for enough senders to drain the backlog within
the drain target at that rate, never more than the credential's rate limit can keep busy, and
never more than the point where another sender stopped adding throughput (a shared CPU, a
database at its limit): scaling that does not help is not done.

Scaling up follows at once; scaling down waits until every recommendation of the
stabilization window was lower (the HorizontalPodAutoscaler's rule), so a backlog that comes
in waves keeps its senders between waves.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

GAIN = 1.2  # a sender more must add a fifth to the throughput to count as helping
SMOOTHING = 0.5  # weight of the newest rate measurement


@dataclass
class Throughput:
    """Measured drain rates (finished notifications per second, all senders together) by replica count."""

    default_per_sender: float
    observed: dict[int, float] = field(default_factory=dict)

    def record(self, replicas: int, rate: float) -> None:
        """One measurement while ``replicas`` senders ran with a backlog to work on."""
        if replicas <= 0 or rate < 0:
            return
        previous = self.observed.get(replicas)
        self.observed[replicas] = rate if previous is None else SMOOTHING * rate + (1 - SMOOTHING) * previous

    def per_sender(self) -> float:
        """What one sender drains per second: the best measured, else the configured default."""
        measured = [rate / replicas for replicas, rate in self.observed.items() if rate > 0]
        return max(measured) if measured else self.default_per_sender

    def saturation(self) -> int | None:
        """The most senders that still helped: more than this added less than ``GAIN`` (None: not seen)."""
        counts = sorted(self.observed)
        for i, fewer in enumerate(counts):
            if any(self.observed[more] < GAIN * self.observed[fewer] for more in counts[i + 1 :]):
                return fewer
        return None


def recommended(
    backlog: int, throughput: Throughput, drain_seconds: float, minimum: int, maximum: int, rate_limit: float = 0
) -> int:
    """Senders that drain ``backlog`` within ``drain_seconds``, within [minimum, maximum].

    A backlog of one notification wakes at least one sender, even with ``minimum`` 0.
    """
    if backlog <= 0:
        return max(0, min(minimum, maximum))
    per_sender = max(throughput.per_sender(), 1e-9)
    wanted = max(1, math.ceil(backlog / (per_sender * drain_seconds)))
    if rate_limit > 0:  # senders beyond what the shared rate keeps busy only wait
        wanted = min(wanted, max(1, math.ceil(rate_limit / per_sender)))
    ceiling = throughput.saturation()
    if ceiling is not None:
        wanted = min(wanted, ceiling)
    return max(minimum, min(maximum, wanted))


class Scaler:
    """Replica decisions for one Deployment; keeps the window's recommendations and the measured rates."""

    def __init__(
        self, window_seconds: float, default_per_sender: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window_seconds
        self.throughput = Throughput(default_per_sender)
        self._clock = clock
        self._history: deque[tuple[float, int]] = deque()
        self._last: tuple[float, int, int, int] | None = None  # (when, finished, running, backlog) of the last look

    def measure(self, finished: int, running: int, backlog: int) -> None:
        """Note the credential's finished count now; since a look that saw the same ``running`` senders and a
        backlog too, it is their rate.

        A span in which senders were added or removed, or that began with nothing to do, measures senders
        that were starting or waiting: too low a rate, which would ask for many more senders than help.
        """
        now = self._clock()
        last = self._last
        if last is not None and now > last[0] and backlog > 0 and last[3] > 0 and running > 0 and running == last[2]:
            self.throughput.record(running, max(0, finished - last[1]) / (now - last[0]))
        self._last = (now, finished, running, backlog)

    def decide(
        self, current: int, backlog: int, drain_seconds: float, minimum: int, maximum: int, rate_limit: float = 0
    ) -> int:
        """The replicas to run now, given those running and the backlog."""
        now = self._clock()
        if not self._history:
            # Nothing seen yet (a restarted operator): what runs now counts as the last recommendation.
            self._history.append((now, max(minimum, min(maximum, current))))
        self._history.append((now, recommended(backlog, self.throughput, drain_seconds, minimum, maximum, rate_limit)))
        while self._history and self._history[0][0] < now - self.window:
            self._history.popleft()
        latest = self._history[-1][1]
        if latest >= current:
            return latest
        # Scaling down: only as far as the highest recommendation of the window (and the bounds) allow.
        return max(minimum, min(maximum, current, max(n for _, n in self._history)))
