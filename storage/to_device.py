"""Send-to-device inboxes: one row per (message, recipient device) at a position of the
``to_device`` stream, kept until the device acknowledges it, plus the senders' transaction ids.

Writes are serialised so that positions commit in the order they are handed out: a reader that
has seen position N has then seen every message up to N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction
from storage.ids import OrderedStream

WILDCARD = "*"  # "every device of this user", expanded when the message is stored


@dataclass(frozen=True)
class InboxMessage:
    stream_id: int
    sender: str
    message_type: str
    content_json: str


@dataclass(frozen=True)
class SendResult:
    """What one send stored: the last position written (None if nothing) and the recipients."""
    position: int | None
    users: frozenset[str]
    duplicate: bool


class ToDeviceStore(OrderedStream):
    def __init__(self, db: Database) -> None:
        # The high-water row, not device_inbox: delivered rows are deleted.
        super().__init__(db, "to_device_stream", "position")

    # --- writing -------------------------------------------------------------------------------

    async def add_messages(self, sender: str, sender_device: str, txn_id: str, message_type: str,
                           messages: dict[str, dict[str, str]], now: int) -> SendResult:
        """Queue ``messages`` ({user_id: {device_id or '*': content_json}}) for local devices.

        '*' stands for every device the user has now; an explicit device id given alongside
        '*' keeps its own content. Device ids the user does not have are dropped. A repeated
        (sender, sender_device, txn_id) stores nothing and reports ``duplicate``.
        """
        def fn(txn: Transaction) -> SendResult:
            seen = txn.query_one("SELECT 1 FROM to_device_txns WHERE sender = ? AND device_id = ?"
                                 " AND txn_id = ?", (sender, sender_device, txn_id))
            if seen:
                return SendResult(None, frozenset(), True)
            txn.execute("INSERT INTO to_device_txns (sender, device_id, txn_id, received_ts)"
                        " VALUES (?, ?, ?, ?)", (sender, sender_device, txn_id, now))
            rows: list[tuple[Any, ...]] = []
            for user_id, by_device in messages.items():
                existing = [r[0] for r in txn.query(
                    "SELECT device_id FROM devices WHERE user_id = ? ORDER BY device_id", (user_id,))]
                targets: dict[str, str] = {}
                if WILDCARD in by_device:
                    targets = {d: by_device[WILDCARD] for d in existing}
                present = set(existing)
                for device_id, content in by_device.items():
                    if device_id != WILDCARD and device_id in present:
                        targets[device_id] = content
                for device_id, content in targets.items():
                    rows.append((self.stream_ids.next(), user_id, device_id, sender, message_type,
                                 content))
            if not rows:
                return SendResult(None, frozenset(), False)
            txn.executemany("INSERT INTO device_inbox (stream_id, user_id, device_id, sender,"
                            " message_type, content_json) VALUES (?, ?, ?, ?, ?, ?)", rows)
            last = rows[-1][0]
            txn.execute("UPDATE to_device_stream SET position = ? WHERE position < ?", (last, last))
            return SendResult(last, frozenset(r[1] for r in rows), False)

        return await self._ordered_write(lambda: self.db.run("to_device_add", fn),
                                         lambda result: result.position)

    async def delete_up_to(self, user_id: str, device_id: str, upto_pos: int) -> int:
        """Drop the device's messages at positions <= ``upto_pos``; returns how many went."""
        return await self.db.execute("DELETE FROM device_inbox WHERE user_id = ? AND device_id = ?"
                                     " AND stream_id <= ?", (user_id, device_id, upto_pos))

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Forget deleted devices: their pending messages and their sent transaction ids."""
        def fn(txn: Transaction) -> None:
            for device_id in device_ids:
                txn.execute("DELETE FROM device_inbox WHERE user_id = ? AND device_id = ?",
                            (user_id, device_id))
                txn.execute("DELETE FROM to_device_txns WHERE sender = ? AND device_id = ?",
                            (user_id, device_id))
        await self.db.run("to_device_delete_devices", fn)

    async def purge_txns_before(self, ts: int) -> int:
        return await self.db.execute("DELETE FROM to_device_txns WHERE received_ts < ?", (ts,))

    # --- reading -------------------------------------------------------------------------------

    async def get_messages(self, user_id: str, device_id: str, after_pos: int | None, upto_pos: int,
                           limit: int) -> list[InboxMessage]:
        """The device's messages at positions in (after_pos, upto_pos], oldest first, at most
        ``limit``; after_pos None: from the start of the queue."""
        sql = ("SELECT stream_id, sender, message_type, content_json FROM device_inbox"
               " WHERE user_id = ? AND device_id = ? AND stream_id <= ?")
        args: list[Any] = [user_id, device_id, upto_pos]
        if after_pos is not None:
            sql += " AND stream_id > ?"
            args.append(after_pos)
        sql += " ORDER BY stream_id LIMIT ?"
        args.append(limit)
        return [InboxMessage(*r) for r in await self.db.query(sql, args)]

    async def count_pending(self, user_id: str, device_id: str) -> int:
        rows = await self.db.query("SELECT COUNT(*) FROM device_inbox WHERE user_id = ?"
                                   " AND device_id = ?", (user_id, device_id))
        return int(rows[0][0])
