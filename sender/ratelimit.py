"""A token bucket in Redis shared by every sender of a credential (or of a campaign)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000) end
local granted = math.min(wanted, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(math.max(now, at)))
redis.call('PEXPIRE', KEYS[1], 60000)
return granted
"""


class TokenBucket:
    """``rate`` sends per second for everyone sharing ``key``; bursts up to one second's worth."""

    def __init__(self, redis: aioredis.Redis, key: str, rate: float) -> None:
        self.key = key
        self.rate = rate
        self._take = redis.register_script(_TAKE)

    async def take(self, wanted: int) -> int:
        """How many of ``wanted`` sends may start now (0..wanted); unlimited when rate is 0."""
        if self.rate <= 0 or wanted <= 0:
            return wanted
        burst = max(1.0, self.rate)
        granted = await self._take(keys=[self.key], args=[self.rate, burst, int(time.time() * 1000), wanted])
        return int(granted)
