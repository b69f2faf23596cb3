"""Sender replicas from a credential's backlog, between its min and max, without flapping.

Scaling up follows the backlog at once; scaling down waits until every recommendation of
the stabilization window was lower (the rule the HorizontalPodAutoscaler applies), so a
backlog that comes in waves keeps its senders between waves.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


def recommended(backlog: int, per_sender: int, minimum: int, maximum: int) -> int:
    """Replicas for ``backlog`` queued notifications, ``per_sender`` each, within [minimum, maximum].

    A backlog of one notification wakes at least one sender, even with ``minimum`` 0.
    """
    wanted = math.ceil(backlog / per_sender) if backlog > 0 else 0
    return max(minimum, min(maximum, wanted))


class Scaler:
    """Replica decisions for one Deployment; keeps the window's recommendations."""

    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window_seconds
        self._clock = clock
        self._history: deque[tuple[float, int]] = deque()

    def decide(self, current: int, backlog: int, per_sender: int, minimum: int, maximum: int) -> int:
        """The replicas to run now, given those running and the backlog."""
        now = self._clock()
        if not self._history:
            # Nothing seen yet (a restarted operator): what runs now counts as the last recommendation.
            self._history.append((now, max(minimum, min(maximum, current))))
        self._history.append((now, recommended(backlog, per_sender, minimum, maximum)))
        while self._history and self._history[0][0] < now - self.window:
            self._history.popleft()
        latest = self._history[-1][1]
        if latest >= current:
            return latest
        # Scaling down: only as far as the highest recommendation of the window (and the bounds) allow.
        return max(minimum, min(maximum, current, max(n for _, n in self._history)))
