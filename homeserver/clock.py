"""Time and timers from the reactor, so tests and jobs share one notion of now."""

from __future__ import annotations

import time
from typing import Any, Callable

from twisted.internet import task


class Clock:
    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def time_msec(self) -> int:
        return int(time.time() * 1000)

    def looping_call(self, interval_s: float, fn: Callable[[], Any], *, now: bool = False) -> task.LoopingCall:
        """Call ``fn`` every ``interval_s`` seconds; failures are logged by the caller's wrapper."""
        lc = task.LoopingCall(fn)
        lc.clock = self.reactor
        lc.start(interval_s, now=now)
        return lc

    def call_later(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> Any:
        return self.reactor.callLater(delay_s, fn, *args)
