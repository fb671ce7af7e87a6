"""Token-bucket rate limiting keyed by user, device or IP, as Synapse's rc_* settings describe."""

from __future__ import annotations

import time
from typing import Callable

from homeserver.config import RateLimit
from homeserver.http.errors import limit_exceeded


class RateLimiter:
    """``burst_count`` actions at once, refilled at ``per_second``; one bucket per key."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.limit = limit
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._max_keys = max_keys

    def _refill(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.limit.burst_count, now))
        return min(self.limit.burst_count, tokens + (now - last) * self.limit.per_second)

    def check(self, key: str, cost: float = 1.0, *, update: bool = True) -> None:
        """Take ``cost`` tokens for ``key`` or raise 429 M_LIMIT_EXCEEDED with retry_after_ms."""
        if self.limit.per_second <= 0 and self.limit.burst_count <= 0:
            return  # both zero: this limiter is switched off
        now = self._clock()
        tokens = self._refill(key, now)
        if tokens < cost:
            wait = (cost - tokens) / self.limit.per_second if self.limit.per_second > 0 else 3600
            raise limit_exceeded(int(wait * 1000) + 1)
        if update:
            if len(self._buckets) >= self._max_keys and key not in self._buckets:
                self._prune(now)
            self._buckets[key] = (tokens - cost, now)

    def record(self, key: str, cost: float = 1.0) -> None:
        """Count an action without refusing it (e.g. a failed login after the fact)."""
        now = self._clock()
        self._buckets[key] = (self._refill(key, now) - cost, now)

    def _prune(self, now: float) -> None:
        full = [k for k in self._buckets if self._refill(k, now) >= self.limit.burst_count]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self._max_keys:
            self._buckets.clear()
