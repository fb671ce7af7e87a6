"""Reads of the room graph that other servers ask for (auth chains, missing events, backfill),
remote invites' stripped state, and the record of /send transactions already processed."""

from __future__ import annotations

import json
from typing import Any, Iterable

from storage.database import Database, Transaction
from storage.events import EventStore


class FederationEventStore:
    def __init__(self, db: Database, events: EventStore) -> None:
        self.db = db
        self.events = events

    async def auth_chain_ids(self, event_ids: Iterable[str]) -> set[str]:
        """Every event reachable from ``event_ids`` through auth edges (not including them)."""
        def fn(txn: Transaction) -> set[str]:
            seen: set[str] = set()
            frontier = list(dict.fromkeys(event_ids))
            while frontier:
                nxt: list[str] = []
                for i in range(0, len(frontier), 200):
                    chunk = frontier[i:i + 200]
                    marks = ",".join("?" * len(chunk))
                    for (auth_id,) in txn.query(
                            f"SELECT auth_id FROM event_auth WHERE event_id IN ({marks})", chunk):
                        if auth_id not in seen:
                            seen.add(auth_id)
                            nxt.append(auth_id)
                frontier = nxt
            return seen
        return await self.db.run("auth_chain_ids", fn)

    async def walk_back(self, start: Iterable[str], stop_at: Iterable[str], limit: int,
                        include_start: bool) -> list[str]:
        """Event ids reached by following prev edges back from ``start`` (breadth first, newest
        depth first), not past ``stop_at``; at most ``limit``."""
        stop = set(stop_at)

        def fn(txn: Transaction) -> list[str]:
            out: list[str] = []
            seen = set(start) | stop
            frontier = list(dict.fromkeys(start))
            if include_start:
                out.extend(e for e in frontier if e not in stop)
            while frontier and len(out) < limit:
                marks = ",".join("?" * len(frontier))
                rows = txn.query(
                    f"SELECT DISTINCT g.prev_event_id, e.depth FROM event_edges g JOIN events e"
                    f" ON e.event_id = g.prev_event_id WHERE g.event_id IN ({marks})"
                    f" AND e.outlier = FALSE ORDER BY e.depth DESC", frontier[:500])
                frontier = []
                for prev, _ in rows:
                    if prev not in seen:
                        seen.add(prev)
                        frontier.append(prev)
                        out.append(prev)
            return out[:limit]
        return await self.db.run("walk_back", fn)

    async def store_invite_state(self, event_id: str, room_id: str, state: list[Any]) -> None:
        await self.db.execute(
            "INSERT INTO remote_invite_state (event_id, room_id, state_json) VALUES (?, ?, ?)"
            " ON CONFLICT (event_id) DO NOTHING", (event_id, room_id, json.dumps(state)))

    async def get_invite_state(self, event_id: str) -> list[Any] | None:
        rows = await self.db.query("SELECT state_json FROM remote_invite_state WHERE event_id = ?",
                                   (event_id,))
        return json.loads(rows[0][0]) if rows else None

    async def get_transaction(self, origin: str, txn_id: str) -> dict[str, Any] | None:
        rows = await self.db.query("SELECT response_json FROM received_transactions WHERE origin = ?"
                                   " AND txn_id = ?", (origin, txn_id))
        return json.loads(rows[0][0]) if rows else None

    async def record_transaction(self, origin: str, txn_id: str, response: dict[str, Any],
                                 now: int) -> None:
        await self.db.execute(
            "INSERT INTO received_transactions (origin, txn_id, response_json, received_ts)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (origin, txn_id) DO NOTHING",
            (origin, txn_id, json.dumps(response), now))

    async def purge_transactions_before(self, ts: int) -> None:
        await self.db.execute("DELETE FROM received_transactions WHERE received_ts < ?", (ts,))

    def remote_membership_txn(self, txn: Transaction, room_id: str, user_id: str, sender: str,
                              membership: str, event_id: str, stream: int) -> None:
        """The local user's membership from an event of a room this server is not in (an
        invite from another server, or the leave that rejects it)."""
        txn.execute("INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership,"
                    " stream_ordering) VALUES (?, ?, ?, ?, ?, ?)",
                    (event_id, room_id, user_id, sender, membership, stream))
        txn.execute(
            "INSERT INTO current_membership (room_id, user_id, membership, event_id,"
            " stream_ordering, forgotten) VALUES (?, ?, ?, ?, ?, FALSE)"
            " ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,"
            " event_id = excluded.event_id, stream_ordering = excluded.stream_ordering,"
            " forgotten = FALSE", (room_id, user_id, membership, event_id, stream))
        self.events.membership_written_txn(txn, user_id, stream)
