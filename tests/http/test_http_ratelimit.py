"""Token-bucket rate limiting with a fake clock: bursts, refill, retry_after_ms, bounded memory."""

from __future__ import annotations

import pytest

from homeserver.config import RateLimit
from homeserver.http.errors import MatrixError
from homeserver.http.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(per_second: float, burst: float, **kw: int) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(RateLimit(per_second, burst), clock=clock, **kw), clock


def refused(lim: RateLimiter, key: str = "k", cost: float = 1.0) -> MatrixError:
    with pytest.raises(MatrixError) as exc:
        lim.check(key, cost)
    return exc.value


def allowed(lim: RateLimiter, key: str = "k", n: int = 1) -> None:
    for _ in range(n):
        lim.check(key)


@pytest.mark.parametrize("burst", [1, 3, 10])
def test_burst_then_refused_with_429(burst: int) -> None:
    lim, _ = limiter(0.5, burst)
    allowed(lim, n=burst)
    err = refused(lim)
    assert (err.status, err.errcode) == (429, "M_LIMIT_EXCEEDED")
    body = err.to_json()
    assert body["errcode"] == "M_LIMIT_EXCEEDED" and isinstance(body["retry_after_ms"], int)


@pytest.mark.parametrize("per_second,expected_ms", [(0.5, 2000), (0.1, 10_000), (4, 250), (1000, 1)])
def test_retry_after_ms_is_the_time_to_the_next_token(per_second: float, expected_ms: int) -> None:
    lim, _ = limiter(per_second, 2)
    allowed(lim, n=2)
    err = refused(lim)
    # Never early: a client that waits exactly retry_after_ms must get through.
    assert expected_ms <= err.extra["retry_after_ms"] <= expected_ms + 2
    assert err.headers["Retry-After"] == str(max(1, -(-err.extra["retry_after_ms"] // 1000)))


def test_waiting_retry_after_ms_is_enough_and_earlier_is_not() -> None:
    lim, clock = limiter(0.3, 2)
    allowed(lim, n=2)
    wait_ms = refused(lim).extra["retry_after_ms"]
    clock.advance(wait_ms / 1000 - 0.05)
    remaining = refused(lim).extra["retry_after_ms"]
    assert 0 < remaining <= 52
    clock.advance(0.05)
    allowed(lim)
    assert refused(lim)


def test_refill_is_gradual_and_capped_at_burst() -> None:
    lim, clock = limiter(1, 3)
    allowed(lim, n=3)
    refused(lim)
    clock.advance(2)
    allowed(lim, n=2)
    refused(lim)
    clock.advance(3600)       # a long idle period does not bank more than burst_count
    allowed(lim, n=3)
    refused(lim)


def test_refusals_do_not_consume_tokens() -> None:
    lim, clock = limiter(1, 1)
    allowed(lim)
    for _ in range(10):
        refused(lim)
    clock.advance(1)
    allowed(lim)


def test_keys_are_independent() -> None:
    lim, _ = limiter(0.01, 2)
    allowed(lim, "1.2.3.4", 2)
    refused(lim, "1.2.3.4")
    allowed(lim, "5.6.7.8", 2)
    refused(lim, "5.6.7.8")


def test_check_without_update_does_not_consume() -> None:
    lim, _ = limiter(0.01, 1)
    for _ in range(5):
        lim.check("k", update=False)
    allowed(lim)
    with pytest.raises(MatrixError):
        lim.check("k", update=False)


def test_record_counts_without_refusing() -> None:
    lim, clock = limiter(1, 2)
    for _ in range(4):
        lim.record("k")          # never raises, even past the limit
    err = refused(lim)
    assert 3000 <= err.extra["retry_after_ms"] <= 3002   # two tokens in debt plus the one wanted
    clock.advance(3)
    allowed(lim)


def test_cost() -> None:
    lim, _ = limiter(1, 5)
    lim.check("k", cost=4)
    err = refused(lim, cost=2)
    assert 1000 <= err.extra["retry_after_ms"] <= 1002
    allowed(lim)


@pytest.mark.parametrize("per_second,burst", [(0, 0), (0.0, 0.0)])
def test_zero_limit_is_switched_off(per_second: float, burst: float) -> None:
    lim, _ = limiter(per_second, burst)
    allowed(lim, n=1000)
    for _ in range(10):
        lim.record("k")
    allowed(lim)
    assert len(lim) == 0


def test_burst_without_refill_waits_an_hour() -> None:
    lim, clock = limiter(0, 2)
    allowed(lim, n=2)
    clock.advance(10**6)
    assert refused(lim).extra["retry_after_ms"] >= 3_600_000


@pytest.mark.parametrize("via", ["check", "record"])
def test_memory_is_bounded(via: str) -> None:
    lim, _ = limiter(0.001, 5, max_keys=50)
    for i in range(1000):
        getattr(lim, via)(f"key{i}")
        assert len(lim) <= 50


def test_flood_of_new_keys_does_not_reset_a_limited_key() -> None:
    lim, clock = limiter(0.001, 3, max_keys=20)
    allowed(lim, "victim-is-limited", 3)
    for i in range(500):
        lim.check(f"attacker{i}")
        clock.advance(0.001)
    refused(lim, "victim-is-limited")


def test_full_buckets_are_forgotten_first() -> None:
    lim, clock = limiter(1, 2, max_keys=10)
    allowed(lim, "limited", 2)
    for i in range(9):
        lim.check(f"k{i}")
    clock.advance(1.5)      # the k* buckets are full again; "limited" is not
    lim.check("new")
    assert len(lim) == 2    # "limited" and "new"
    allowed(lim, "limited")
    refused(lim, "limited")
