"""Registration tokens (m.login.registration_token), with Synapse's pending/completed counts."""

from __future__ import annotations

from dataclasses import dataclass

from storage.database import Database, Transaction
from storage.engines import IntegrityError


@dataclass(frozen=True)
class RegistrationToken:
    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_time: int | None


_COLS = "token, uses_allowed, pending, completed, expiry_time"


class RegistrationTokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, token: str, uses_allowed: int | None, expiry_time: int | None) -> bool:
        """Returns False if the token already exists."""
        def fn(txn: Transaction) -> bool:
            try:
                txn.execute("INSERT INTO registration_tokens (token, uses_allowed, expiry_time)"
                            " VALUES (?, ?, ?)", (token, uses_allowed, expiry_time))
            except IntegrityError:
                return False
            return True
        return await self.db.run("create_registration_token", fn)

    async def get(self, token: str) -> RegistrationToken | None:
        rows = await self.db.query(f"SELECT {_COLS} FROM registration_tokens WHERE token = ?", (token,))
        return RegistrationToken(*rows[0]) if rows else None

    async def list(self) -> list[RegistrationToken]:
        rows = await self.db.query(f"SELECT {_COLS} FROM registration_tokens ORDER BY token")
        return [RegistrationToken(*r) for r in rows]

    async def update(self, token: str, uses_allowed: int | None, expiry_time: int | None) -> None:
        await self.db.execute("UPDATE registration_tokens SET uses_allowed = ?, expiry_time = ?"
                              " WHERE token = ?", (uses_allowed, expiry_time, token))

    async def delete(self, token: str) -> bool:
        return await self.db.execute("DELETE FROM registration_tokens WHERE token = ?", (token,)) > 0

    async def try_reserve(self, token: str, now: int) -> bool:
        """Count a pending use if the token is valid and has a use left; atomic."""
        def fn(txn: Transaction) -> bool:
            txn.execute(
                "UPDATE registration_tokens SET pending = pending + 1 WHERE token = ?"
                " AND (expiry_time IS NULL OR expiry_time > ?)"
                " AND (uses_allowed IS NULL OR pending + completed < uses_allowed)", (token, now))
            return txn.rowcount == 1
        return await self.db.run("reserve_registration_token", fn)

    async def is_valid(self, token: str, now: int) -> bool:
        rows = await self.db.query(
            "SELECT 1 FROM registration_tokens WHERE token = ?"
            " AND (expiry_time IS NULL OR expiry_time > ?)"
            " AND (uses_allowed IS NULL OR pending + completed < uses_allowed)", (token, now))
        return bool(rows)

    async def complete(self, token: str) -> None:
        await self.db.execute("UPDATE registration_tokens SET pending = pending - 1,"
                              " completed = completed + 1 WHERE token = ? AND pending > 0", (token,))

    async def release(self, token: str) -> None:
        await self.db.execute("UPDATE registration_tokens SET pending = pending - 1"
                              " WHERE token = ? AND pending > 0", (token,))
