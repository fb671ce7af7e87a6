"""Reports of events, rooms and users, for the admins to review."""

from __future__ import annotations

from storage.database import Database, Transaction
from storage.ids import IdGenerator


class ReportStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.event_ids = IdGenerator("event_reports", "id")
        self.user_ids = IdGenerator("user_reports", "id")

    async def load(self) -> None:
        await self.event_ids.load(self.db)
        await self.user_ids.load(self.db)

    async def report_event(self, room_id: str, event_id: str | None, user_id: str, reason: str | None,
                           now: int) -> int:
        rid = self.event_ids.next()

        def fn(txn: Transaction) -> None:
            txn.execute("INSERT INTO event_reports (id, room_id, event_id, user_id, reason, received_ts)"
                        " VALUES (?, ?, ?, ?, ?, ?)", (rid, room_id, event_id, user_id, reason, now))
        await self.db.run("report_event", fn)
        return rid

    async def report_user(self, target: str, user_id: str, reason: str | None, now: int) -> int:
        rid = self.user_ids.next()
        await self.db.execute("INSERT INTO user_reports (id, target_user_id, user_id, reason, received_ts)"
                              " VALUES (?, ?, ?, ?, ?)", (rid, target, user_id, reason, now))
        return rid

    async def list_event_reports(self, limit: int, offset: int) -> list[tuple]:
        return await self.db.query("SELECT id, room_id, event_id, user_id, reason, received_ts"
                                   " FROM event_reports ORDER BY id DESC LIMIT ? OFFSET ?",
                                   (limit, offset))

    async def count_event_reports(self) -> int:
        return int((await self.db.query("SELECT COUNT(*) FROM event_reports"))[0][0])
