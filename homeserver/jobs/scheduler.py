"""Runs periodic jobs on the reactor; a job that fails is logged and tried again next time."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from twisted.internet import defer

from homeserver.clock import Clock

logger = logging.getLogger(__name__)

Job = Callable[[], Awaitable[Any]]


class Scheduler:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._jobs: list[tuple[str, float, Job, bool]] = []
        self._shutdown: list[tuple[str, Job]] = []
        self._loops: list[Any] = []
        self._running: set[str] = set()

    def every(self, name: str, interval_s: float, job: Job, *, now: bool = False) -> None:
        self._jobs.append((name, interval_s, job, now))

    def at_shutdown(self, name: str, job: Job) -> None:
        self._shutdown.append((name, job))

    async def run(self, name: str, job: Job) -> None:
        if name in self._running:
            return  # the previous run is still going; never overlap a job with itself
        self._running.add(name)
        try:
            await job()
        except Exception:
            logger.exception("background job %r failed", name)
        finally:
            self._running.discard(name)

    def start(self) -> None:
        for name, interval, job, now in self._jobs:
            def tick(name: str = name, job: Job = job) -> None:
                defer.ensureDeferred(self.run(name, job))
            self._loops.append(self.clock.looping_call(interval, tick, now=now))

    async def stop(self) -> None:
        for lc in self._loops:
            if lc.running:
                lc.stop()
        self._loops.clear()
        for name, job in self._shutdown:
            await self.run(name, job)
