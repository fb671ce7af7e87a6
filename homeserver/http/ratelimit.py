"""Token-bucket rate limiting keyed by user, device or IP, as Synapse's rc_* settings describe."""

from __future__ import annotations

import math
import time
from typing import Callable

from homeserver.config import RateLimit
from homeserver.http.errors import limit_exceeded

# Slack for floating-point refill arithmetic (a token that is 1e-12 short is a whole token).
_EPSILON = 1e-6


class RateLimiter:
    """``burst_count`` actions at once, refilled at ``per_second``; one bucket per key.

    At most ``max_keys`` buckets are kept: full buckets are dropped first (a full bucket is
    the same as none), then the fullest, so a flood of new keys cannot reset the limits of
    the keys that are actually being limited.
    """

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.limit = limit
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._max_keys = max_keys

    @property
    def enabled(self) -> bool:
        return self.limit.per_second > 0 or self.limit.burst_count > 0

    def _refill(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.limit.burst_count, now))
        return min(self.limit.burst_count, tokens + (now - last) * self.limit.per_second)

    def check(self, key: str, cost: float = 1.0, *, update: bool = True) -> None:
        """Take ``cost`` tokens for ``key`` or raise 429 M_LIMIT_EXCEEDED with retry_after_ms."""
        if not self.enabled:
            return  # both zero: this limiter is switched off
        now = self._clock()
        tokens = self._refill(key, now)
        if tokens < cost - _EPSILON:
            wait = (cost - tokens) / self.limit.per_second if self.limit.per_second > 0 else 3600
            # Rounded up, so that a client waiting exactly this long gets through.
            raise limit_exceeded(max(1, math.ceil(wait * 1000 - _EPSILON)))
        if update:
            self._store(key, tokens - cost, now)

    def record(self, key: str, cost: float = 1.0) -> None:
        """Count an action without refusing it (e.g. a failed login after the fact)."""
        if not self.enabled:
            return
        now = self._clock()
        self._store(key, self._refill(key, now) - cost, now)

    def _store(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._prune(now)
        self._buckets[key] = (tokens, now)

    def _prune(self, now: float) -> None:
        tokens = {k: self._refill(k, now) for k in self._buckets}
        for k, t in tokens.items():
            if t >= self.limit.burst_count:
                del self._buckets[k]
        excess = len(self._buckets) - self._max_keys + 1
        if excess > 0:
            # Evict the fullest buckets, the ones least restrained by their limit (a tenth at a
            # time, so that a steady stream of new keys does not sort on every request).
            fullest = sorted(self._buckets, key=lambda k: tokens[k], reverse=True)
            for k in fullest[:max(excess, self._max_keys // 10)]:
                del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)
