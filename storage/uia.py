"""User-interactive auth sessions, persisted so a restart does not break a half-done flow."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction


@dataclass(frozen=True)
class UiaSession:
    session_id: str
    created_ts: int
    purpose: str
    user_id: str | None
    request: dict
    completed: list[str]
    params: dict


class UiaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, session_id: str, now: int, purpose: str, user_id: str | None,
                     request: dict, params: dict) -> None:
        await self.db.execute(
            "INSERT INTO uia_sessions (session_id, created_ts, purpose, user_id, request_json,"
            " completed_json, params_json) VALUES (?, ?, ?, ?, ?, '[]', ?)",
            (session_id, now, purpose, user_id, json.dumps(request), json.dumps(params)))

    async def get(self, session_id: str) -> UiaSession | None:
        rows = await self.db.query(
            "SELECT session_id, created_ts, purpose, user_id, request_json, completed_json,"
            " params_json FROM uia_sessions WHERE session_id = ?", (session_id,))
        if not rows:
            return None
        r = rows[0]
        return UiaSession(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), json.loads(r[6]))

    async def mark_completed(self, session_id: str, stage: str) -> list[str]:
        """Add a completed stage; returns the full list."""
        def fn(txn: Transaction) -> list[str]:
            row = txn.query_one("SELECT completed_json FROM uia_sessions WHERE session_id = ?",
                                (session_id,))
            done = json.loads(row[0]) if row else []
            if stage not in done:
                done.append(stage)
            txn.execute("UPDATE uia_sessions SET completed_json = ? WHERE session_id = ?",
                        (json.dumps(done), session_id))
            return done
        return await self.db.run("uia_mark_completed", fn)

    async def set_param(self, session_id: str, key: str, value: Any) -> None:
        def fn(txn: Transaction) -> None:
            row = txn.query_one("SELECT params_json FROM uia_sessions WHERE session_id = ?",
                                (session_id,))
            params = json.loads(row[0]) if row else {}
            params[key] = value
            txn.execute("UPDATE uia_sessions SET params_json = ? WHERE session_id = ?",
                        (json.dumps(params), session_id))
        await self.db.run("uia_set_param", fn)

    async def delete(self, session_id: str) -> None:
        await self.db.execute("DELETE FROM uia_sessions WHERE session_id = ?", (session_id,))

    async def delete_older_than(self, cutoff_ts: int) -> int:
        return await self.db.execute("DELETE FROM uia_sessions WHERE created_ts < ?", (cutoff_ts,))
