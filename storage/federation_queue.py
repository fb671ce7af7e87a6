"""The outgoing federation outbox: PDUs and EDUs waiting per destination, the transaction in
flight to each destination, and each destination's retry state.

Everything the sender has not had answered lives here, so a restart loses nothing: waiting rows
are picked up again and a transaction in flight is resent with the same id and body. Enqueueing
writes are serialised so that outbox positions commit in the order they are handed out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from twisted.internet.defer import DeferredLock

from storage.database import Database, Transaction
from storage.ids import IdGenerator


@dataclass(frozen=True)
class QueuedEdu:
    stream_id: int
    edu_type: str
    content: dict[str, Any]


@dataclass(frozen=True)
class OutgoingTransaction:
    """One transaction to a destination: its id and timestamp (fixed for every retry) and its
    PDU event ids and EDUs in outbox order."""
    destination: str
    txn_id: str
    origin_server_ts: int
    pdu_event_ids: tuple[str, ...]
    edus: tuple[QueuedEdu, ...]


@dataclass(frozen=True)
class RetryTimings:
    """A destination's backoff: not contacted before retry_last_ts + retry_interval_ms."""
    destination: str
    retry_last_ts: int
    retry_interval_ms: int
    failure_ts: int | None


class FederationQueueStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.stream_ids = IdGenerator("federation_outbox_stream", "position")
        self._write_lock = DeferredLock()
        self._loaded = False

    async def load(self) -> None:
        if not self._loaded:
            await self.stream_ids.load(self.db)
            self._loaded = True

    # --- enqueueing ----------------------------------------------------------------------------

    async def add_pdu(self, event_id: str, destinations: Iterable[str]) -> None:
        """Queue one PDU for each destination, in one transaction; a PDU already waiting for a
        destination is not queued twice."""
        dests = sorted(set(destinations))
        if not dests:
            return
        async with self._write_lock:
            await self.db.run("federation_queue_add_pdu", self.add_pdu_txn, event_id, dests)

    def add_pdu_txn(self, txn: Transaction, event_id: str, destinations: Iterable[str]) -> None:
        """``add_pdu`` inside the caller's transaction: the event and its place in the outbox
        commit together, so a crash can never keep one without the other."""
        dests = sorted(set(destinations))
        if not dests:
            return
        rows = [(self.stream_ids.next(), d, event_id) for d in dests]
        txn.executemany("INSERT INTO federation_outbox_pdus (stream_id, destination, event_id)"
                        " VALUES (?, ?, ?) ON CONFLICT (destination, event_id) DO NOTHING", rows)
        _advance_stream(txn, rows[-1][0])

    async def add_edu(self, destinations: Iterable[str], edu_type: str, content: Mapping[str, Any],
                      key: str | None = None) -> None:
        """Queue one EDU for each destination, in one transaction. With a ``key``, a waiting EDU
        of the same type and key for that destination is replaced (only the latest is sent)."""
        dests = sorted(set(destinations))
        if not dests:
            return
        content_json = json.dumps(content, ensure_ascii=False, separators=(",", ":"))

        def fn(txn: Transaction, rows: list[tuple[int, str, str, str | None, str]]) -> None:
            if key is not None:
                txn.executemany("DELETE FROM federation_outbox_edus WHERE destination = ?"
                                " AND edu_type = ? AND edu_key = ? AND txn_id IS NULL",
                                [(d, edu_type, key) for d in dests])
            txn.executemany("INSERT INTO federation_outbox_edus (stream_id, destination, edu_type,"
                            " edu_key, content_json) VALUES (?, ?, ?, ?, ?)", rows)
            _advance_stream(txn, rows[-1][0])

        async with self._write_lock:
            rows = [(self.stream_ids.next(), d, edu_type, key, content_json) for d in dests]
            await self.db.run("federation_queue_add_edu", fn, rows)

    # --- transactions --------------------------------------------------------------------------

    async def destinations_with_pending(self) -> list[str]:
        """Destinations with anything waiting or in flight."""
        rows = await self.db.query("SELECT destination FROM federation_outbox_pdus"
                                   " UNION SELECT destination FROM federation_outbox_edus")
        return sorted(r[0] for r in rows)

    async def claim_transaction(self, destination: str, now_ms: int, max_pdus: int,
                                max_edus: int) -> OutgoingTransaction | None:
        """The destination's transaction in flight if there is one, else a new one made of the
        oldest waiting PDUs and EDUs (at most ``max_pdus`` / ``max_edus``); None when nothing
        waits. A new transaction's id is derived from a persisted per-destination counter."""
        def fn(txn: Transaction) -> OutgoingTransaction | None:
            row = txn.query_one("SELECT txn_id, txn_ts, txn_seq FROM federation_destinations"
                                " WHERE destination = ?", (destination,))
            if row is not None and row[0] is not None:
                return _read_transaction(txn, destination, row[0], int(row[1]))
            pdus = txn.query("SELECT stream_id FROM federation_outbox_pdus WHERE destination = ?"
                             " AND txn_id IS NULL ORDER BY stream_id LIMIT ?",
                             (destination, max_pdus))
            edus = txn.query("SELECT stream_id FROM federation_outbox_edus WHERE destination = ?"
                             " AND txn_id IS NULL ORDER BY stream_id LIMIT ?",
                             (destination, max_edus))
            if not pdus and not edus:
                return None
            seq = (int(row[2]) if row is not None else 0) + 1
            txn_id = f"{now_ms}.{seq}"
            txn.execute("INSERT INTO federation_destinations (destination, txn_seq, txn_id, txn_ts)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET"
                        " txn_seq = excluded.txn_seq, txn_id = excluded.txn_id,"
                        " txn_ts = excluded.txn_ts", (destination, seq, txn_id, now_ms))
            txn.executemany("UPDATE federation_outbox_pdus SET txn_id = ? WHERE stream_id = ?",
                            [(txn_id, r[0]) for r in pdus])
            txn.executemany("UPDATE federation_outbox_edus SET txn_id = ? WHERE stream_id = ?",
                            [(txn_id, r[0]) for r in edus])
            return _read_transaction(txn, destination, txn_id, now_ms)

        return await self.db.run("federation_queue_claim", fn)

    async def complete_transaction(self, destination: str, txn_id: str) -> None:
        """The destination answered ``txn_id`` (or refused it for good): drop its rows and clear
        the destination's transaction in flight."""
        def fn(txn: Transaction) -> None:
            highest = 0
            for table in ("federation_outbox_pdus", "federation_outbox_edus"):
                row = txn.query_one(f"SELECT MAX(stream_id) FROM {table} WHERE destination = ?"
                                    " AND txn_id = ?", (destination, txn_id))
                highest = max(highest, int(row[0] or 0) if row else 0)
                txn.execute(f"DELETE FROM {table} WHERE destination = ? AND txn_id = ?",
                            (destination, txn_id))
            txn.execute("UPDATE federation_destinations SET txn_id = NULL, txn_ts = NULL,"
                        " last_sent_stream = CASE WHEN last_sent_stream < ? THEN ?"
                        " ELSE last_sent_stream END WHERE destination = ? AND txn_id = ?",
                        (highest, highest, destination, txn_id))

        await self.db.run("federation_queue_complete", fn)

    async def get_last_sent_stream(self, destination: str) -> int:
        """The highest outbox position the destination has acknowledged (0: none)."""
        rows = await self.db.query("SELECT last_sent_stream FROM federation_destinations"
                                   " WHERE destination = ?", (destination,))
        return int(rows[0][0]) if rows else 0

    async def count_pending(self, destination: str) -> tuple[int, int]:
        """(PDUs, EDUs) waiting or in flight for the destination."""
        def fn(txn: Transaction) -> tuple[int, int]:
            p = txn.query_one("SELECT COUNT(*) FROM federation_outbox_pdus WHERE destination = ?",
                              (destination,))
            e = txn.query_one("SELECT COUNT(*) FROM federation_outbox_edus WHERE destination = ?",
                              (destination,))
            return int(p[0]) if p else 0, int(e[0]) if e else 0
        return await self.db.run("federation_queue_count", fn)

    # --- retry state ---------------------------------------------------------------------------

    async def get_backing_off(self) -> list[RetryTimings]:
        """Every destination with a retry interval, i.e. one that failed since it last answered."""
        rows = await self.db.query("SELECT destination, retry_last_ts, retry_interval_ms,"
                                   " failure_ts FROM federation_destinations"
                                   " WHERE retry_interval_ms > 0")
        return [RetryTimings(r[0], int(r[1]), int(r[2]), None if r[3] is None else int(r[3]))
                for r in rows]

    async def get_retry_timings(self, destination: str) -> RetryTimings | None:
        rows = await self.db.query("SELECT destination, retry_last_ts, retry_interval_ms,"
                                   " failure_ts FROM federation_destinations"
                                   " WHERE destination = ? AND retry_interval_ms > 0",
                                   (destination,))
        if not rows:
            return None
        r = rows[0]
        return RetryTimings(r[0], int(r[1]), int(r[2]), None if r[3] is None else int(r[3]))

    async def set_retry_timings(self, timings: RetryTimings) -> None:
        await self.db.execute(
            "INSERT INTO federation_destinations (destination, retry_last_ts, retry_interval_ms,"
            " failure_ts) VALUES (?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET"
            " retry_last_ts = excluded.retry_last_ts,"
            " retry_interval_ms = excluded.retry_interval_ms, failure_ts = excluded.failure_ts",
            (timings.destination, timings.retry_last_ts, timings.retry_interval_ms,
             timings.failure_ts))

    async def clear_retry_timings(self, destination: str) -> None:
        """The destination answered: no backoff any more."""
        await self.db.execute("UPDATE federation_destinations SET retry_last_ts = 0,"
                              " retry_interval_ms = 0, failure_ts = NULL WHERE destination = ?",
                              (destination,))


def _advance_stream(txn: Transaction, position: int) -> None:
    txn.execute("UPDATE federation_outbox_stream SET position = ? WHERE position < ?",
                (position, position))


def _read_transaction(txn: Transaction, destination: str, txn_id: str,
                      ts: int) -> OutgoingTransaction:
    pdus = txn.query("SELECT event_id FROM federation_outbox_pdus WHERE destination = ?"
                     " AND txn_id = ? ORDER BY stream_id", (destination, txn_id))
    edus = txn.query("SELECT stream_id, edu_type, content_json FROM federation_outbox_edus"
                     " WHERE destination = ? AND txn_id = ? ORDER BY stream_id",
                     (destination, txn_id))
    return OutgoingTransaction(destination, txn_id, ts, tuple(r[0] for r in pdus),
                               tuple(QueuedEdu(int(r[0]), r[1], json.loads(r[2])) for r in edus))
