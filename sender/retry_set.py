"""The delayed-retry set: notifications waiting out their backoff, put back on their streams when due.

When to retry is decided in :mod:`noti.sender.policy`; this module only keeps the appointment.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from noti.queue import QueuedNotification

_SEPARATOR = "\x1f"
# Move due members back to their streams and out of the set in one step, so a crash can
# neither lose a retry nor queue it twice. Members are "stream␟version␟body␟nonce".
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local a = string.find(member, '\\31', 1, true)
  local b = string.find(member, '\\31', a + 1, true)
  local c = string.find(member, '\\31', b + 1, true)
  redis.call('XADD', string.sub(member, 1, a - 1), '*', 'v', string.sub(member, a + 1, b - 1),
             'n', string.sub(member, b + 1, c - 1))
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""


def retry_member(stream: str, message: QueuedNotification, nonce: str) -> str:
    """The retry set's member for ``message`` (already carrying its next attempt number)."""
    fields = message.encode()
    return _SEPARATOR.join((stream, fields["v"].decode(), fields["n"].decode(), nonce))


class RetryQueue:
    """The credential's delayed-retry sorted set (score: epoch second the retry is due)."""

    def __init__(self, redis: aioredis.Redis, key: str) -> None:
        self.key = key
        self._move = redis.register_script(_MOVE_DUE)

    async def move_due(self, now: float, limit: int = 500) -> int:
        """Put retries that are due back on their streams; returns how many."""
        moved = await self._move(keys=[self.key], args=[now, limit])
        return int(moved)
