"""The IP address and user agent each session was last seen with, written in batches."""

from __future__ import annotations

from typing import Iterable

from storage.database import Database, Transaction


class ClientIpStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record_batch(self, rows: Iterable[tuple[str, str, str, str, int]]) -> None:
        """Upsert (user_id, device_id, ip, user_agent, ts) rows and the devices' last-seen columns."""
        rows = list(rows)

        def fn(txn: Transaction) -> None:
            # Only sessions that still exist: a device revoked after the sighting leaves no trace.
            txn.executemany(
                "INSERT INTO user_ips (user_id, device_id, ip, user_agent, last_seen_ts)"
                " SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM devices d"
                " WHERE d.user_id = ? AND d.device_id = ?)"
                " ON CONFLICT (user_id, device_id, ip, user_agent)"
                " DO UPDATE SET last_seen_ts = excluded.last_seen_ts",
                [(u, d, ip, ua, ts, u, d) for u, d, ip, ua, ts in rows])
            txn.executemany(
                "UPDATE devices SET last_seen_ip = ?, last_seen_user_agent = ?, last_seen_ts = ?"
                " WHERE user_id = ? AND device_id = ?"
                " AND (last_seen_ts IS NULL OR last_seen_ts <= ?)",
                [(ip, ua, ts, user_id, device_id, ts) for user_id, device_id, ip, ua, ts in rows])
        await self.db.run("record_client_ips", fn)

    async def get_for_user(self, user_id: str) -> list[tuple[str, str, str, int]]:
        """(device_id, ip, user_agent, last_seen_ts) for every session of a user, newest first."""
        rows = await self.db.query(
            "SELECT device_id, ip, user_agent, last_seen_ts FROM user_ips WHERE user_id = ?"
            " ORDER BY last_seen_ts DESC", (user_id,))
        return [tuple(r) for r in rows]  # type: ignore[misc]

    async def purge_older_than(self, cutoff_ts: int) -> int:
        """Forget IPs and user agents last seen before ``cutoff_ts``; returns rows removed."""
        def fn(txn: Transaction) -> int:
            txn.execute("DELETE FROM user_ips WHERE last_seen_ts < ?", (cutoff_ts,))
            n = txn.rowcount
            txn.execute("UPDATE devices SET last_seen_ip = NULL, last_seen_user_agent = NULL"
                        " WHERE last_seen_ts < ? AND (last_seen_ip IS NOT NULL"
                        " OR last_seen_user_agent IS NOT NULL)", (cutoff_ts,))
            return n + txn.rowcount
        return await self.db.run("purge_client_ips", fn)
