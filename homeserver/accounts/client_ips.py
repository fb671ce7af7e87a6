"""Remembers the IP and user agent each session was last seen with, without a write per request.

Sightings collect in memory and are flushed in one transaction every few seconds (and at
shutdown); a job forgets records older than ``user_ips_max_age`` (default 12 months).
"""

from __future__ import annotations

import logging

from homeserver.clock import Clock
from storage.client_ips import ClientIpStore

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 5.0


class ClientIpTracker:
    def __init__(self, store: ClientIpStore, clock: Clock, max_age_ms: int) -> None:
        self.store = store
        self.clock = clock
        self.max_age_ms = max_age_ms
        self._pending: dict[tuple[str, str, str, str], int] = {}

    def record(self, user_id: str, device_id: str, ip: str, user_agent: str) -> None:
        self._pending[(user_id, device_id, ip, user_agent)] = self.clock.time_msec()

    def pending_for(self, user_id: str) -> dict[str, tuple[str, str, int]]:
        """device_id -> (ip, user_agent, ts) of sightings not yet written."""
        out: dict[str, tuple[str, str, int]] = {}
        for (uid, device_id, ip, ua), ts in self._pending.items():
            if uid == user_id and (device_id not in out or out[device_id][2] <= ts):
                out[device_id] = (ip, ua, ts)
        return out

    def forget(self, user_id: str, device_id: str | None = None) -> None:
        """Drop unwritten sightings of a deleted device (or of every device of a user)."""
        for key in [k for k in self._pending if k[0] == user_id and device_id in (None, k[1])]:
            del self._pending[key]

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self.store.record_batch((u, d, ip, ua, ts) for (u, d, ip, ua), ts in batch.items())
        except Exception:
            logger.exception("could not write %d client IP records; will retry", len(batch))
            for k, ts in batch.items():
                self._pending[k] = max(ts, self._pending.get(k, 0))

    async def purge_expired(self) -> int:
        cutoff = self.clock.time_msec() - self.max_age_ms
        n = await self.store.purge_older_than(cutoff)
        if n:
            logger.info("purged %d IP/user-agent records older than %d ms", n, self.max_age_ms)
        return n
