"""Read receipts: the latest one per (room, receipt type, user, thread).

Every change takes the next id of the "receipts" sync stream. Writes are serialised, so ids
commit in order and ``current_position`` never names a change that is not yet readable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from storage.database import Database, Transaction
from storage.ids import OrderedStream

_COLS = "room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id"
_CHUNK = 200


@dataclass(frozen=True)
class Receipt:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str | None  # None: unthreaded
    event_id: str
    ts: int
    stream_id: int


def _receipt(row: tuple) -> Receipt:
    room_id, rtype, user_id, thread_id, event_id, ts, stream_id = row
    return Receipt(room_id, rtype, user_id, thread_id or None, event_id, ts, stream_id)


class ReceiptStore(OrderedStream):
    def __init__(self, db: Database) -> None:
        super().__init__(db, "receipts", "stream_id")

    async def upsert(self, room_id: str, receipt_type: str, user_id: str, thread_id: str | None,
                     event_id: str, event_stream: int, ts: int) -> int | None:
        """Record a receipt; returns its stream id, or None when the user's receipt of this type
        and thread already points at the same event or a later one (receipts never move back)."""
        async def write() -> tuple[int, int]:
            stream_id = self.stream_ids.next()

            def fn(txn: Transaction) -> int:
                txn.execute(
                    "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id,"
                    " event_stream, ts, stream_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET"
                    " event_id = excluded.event_id, event_stream = excluded.event_stream,"
                    " ts = excluded.ts, stream_id = excluded.stream_id"
                    " WHERE receipts.event_stream < excluded.event_stream",
                    (room_id, receipt_type, user_id, thread_id or "", event_id, event_stream, ts,
                     stream_id))
                return txn.rowcount
            return stream_id, await self.db.run("upsert_receipt", fn)
        # An id not used (nothing written) leaves a harmless gap: readers only compare positions.
        stream_id, written = await self._ordered_write(write, lambda r: r[0])
        return stream_id if written else None

    async def get(self, room_id: str, receipt_type: str, user_id: str,
                  thread_id: str | None = None) -> Receipt | None:
        rows = await self.db.query(
            f"SELECT {_COLS} FROM receipts WHERE room_id = ? AND receipt_type = ? AND user_id = ?"
            " AND thread_id = ?", (room_id, receipt_type, user_id, thread_id or ""))
        return _receipt(rows[0]) if rows else None

    async def changes(self, room_ids: Iterable[str], from_pos: int | None, to_pos: int,
                      public_types: Sequence[str], own_types: Sequence[str], user_id: str
                      ) -> list[Receipt]:
        """Receipts in the rooms with a stream id in (from_pos, to_pos] (all up to to_pos when
        from_pos is None): those of ``public_types`` from anyone, and those of ``own_types``
        only from ``user_id``. Ordered by stream id."""
        ids = sorted(set(room_ids))
        if not ids or not (public_types or own_types):
            return []
        lower = -1 if from_pos is None else from_pos
        conds, type_args = [], []
        if public_types:
            conds.append(f"receipt_type IN ({','.join('?' * len(public_types))})")
            type_args += list(public_types)
        if own_types:
            conds.append(f"(receipt_type IN ({','.join('?' * len(own_types))}) AND user_id = ?)")
            type_args += [*own_types, user_id]
        where_types = " OR ".join(conds)

        def fn(txn: Transaction) -> list[Receipt]:
            out: list[Receipt] = []
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i:i + _CHUNK]
                out += [_receipt(r) for r in txn.query(
                    f"SELECT {_COLS} FROM receipts WHERE room_id IN ({','.join('?' * len(chunk))})"
                    f" AND stream_id > ? AND stream_id <= ? AND ({where_types})",
                    (*chunk, lower, to_pos, *type_args))]
            return sorted(out, key=lambda r: r.stream_id)
        return await self.db.run("receipt_changes", fn)
