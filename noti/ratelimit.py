"""Token buckets kept in Redis, shared by every process that uses the same key.

The gateway limits each API key with one; senders limit a credential's and each campaign's
send rate with others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

# KEYS[1] the bucket; ARGV rate per second, burst, now (s), wanted, partial (1: grant what there is).
# Returns {granted, seconds until the rest would be there}.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local granted = 0
if tokens >= wanted then
  granted = wanted
elseif ARGV[5] == '1' then
  granted = math.max(0, math.floor(tokens))
end
tokens = tokens - granted
local wait = 0
if granted < wanted then
  wait = (wanted - granted - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(math.max(now, ts)))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {granted, tostring(wait)}
"""


@dataclass(frozen=True, slots=True)
class Grant:
    granted: int
    wait: float  # seconds until what was not granted would be


class TokenBucket:
    """``rate`` per second for everyone sharing ``key``, up to ``burst`` at once; rate 0 is unlimited."""

    def __init__(self, redis: aioredis.Redis, key: str, rate: float, burst: float | None = None) -> None:
        self.key = key
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._take = redis.register_script(_TAKE)

    async def take(self, wanted: int, *, partial: bool = True) -> Grant:
        """Take ``wanted`` tokens; with ``partial`` as many as there are, else all or none."""
        if self.rate <= 0 or wanted <= 0:
            return Grant(wanted, 0.0)
        granted, wait = await self._take(
            keys=[self.key], args=[self.rate, self.burst, f"{time.time():.6f}", wanted, int(partial)]
        )
        return Grant(int(granted), float(wait))
