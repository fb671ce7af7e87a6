"""Users, devices, access tokens and refresh tokens."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from storage.database import Database, Transaction
from storage.engines import IntegrityError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    password_hash: str | None
    created_ts: int
    last_login_ts: int | None
    admin: bool
    is_guest: bool
    user_type: str | None
    deactivated: bool


@dataclass(frozen=True)
class DeviceRecord:
    user_id: str
    device_id: str
    display_name: str | None
    created_ts: int
    last_seen_ts: int | None
    last_seen_ip: str | None
    last_seen_user_agent: str | None


@dataclass(frozen=True)
class TokenRecord:
    """What an access token (looked up by its hash) stands for."""
    token_hash: str
    user_id: str
    device_id: str
    valid_until_ts: int | None
    refresh_token_hash: str | None
    used: bool
    is_guest: bool
    admin: bool
    deactivated: bool


@dataclass(frozen=True)
class RefreshRecord:
    token_hash: str
    user_id: str
    device_id: str
    expiry_ts: int | None
    next_token_hash: str | None


class UserExistsError(Exception):
    """The user id is taken (or was taken by a now-deactivated account)."""


_USER_COLS = ("user_id, password_hash, created_ts, last_login_ts, admin, is_guest, user_type, "
              "deactivated")
_DEVICE_COLS = ("user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, "
                "last_seen_user_agent")


def _user(row: tuple) -> UserRecord:
    return UserRecord(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), row[6], bool(row[7]))


def _device(row: tuple) -> DeviceRecord:
    return DeviceRecord(*row)


def _writes_tokens(method: F) -> F:
    """Mark a store method that can change what a token stands for: the token cache is dropped
    before and after it, and nothing read while it runs is cached."""
    @functools.wraps(method)
    async def wrapper(self: "AccountStore", *args: Any, **kwargs: Any) -> Any:
        self._token_writes += 1
        self._token_generation += 1
        self._tokens.clear()
        try:
            return await method(self, *args, **kwargs)
        finally:
            self._token_writes -= 1
            self._token_generation += 1
            self._tokens.clear()
    return wrapper  # type: ignore[return-value]


class AccountStore:
    """SQL for the accounts domain; every method is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Every authenticated request looks its token up; answers are cached and the whole
        # cache is dropped by any write that could change one (these writes are rare).
        self._tokens: dict[str, TokenRecord] = {}
        self._token_generation = 0
        self._token_writes = 0

    # --- users ---------------------------------------------------------------------------------

    async def create_user(self, user_id: str, password_hash: str | None, now: int, *,
                          admin: bool = False, is_guest: bool = False,
                          user_type: str | None = None) -> None:
        """Insert a user; raises UserExistsError if the id was ever used."""
        def fn(txn: Transaction) -> None:
            try:
                txn.execute(
                    "INSERT INTO users (user_id, password_hash, created_ts, admin, is_guest,"
                    " user_type, deactivated) VALUES (?, ?, ?, ?, ?, ?, FALSE)",
                    (user_id, password_hash, now, admin, is_guest, user_type))
            except IntegrityError:
                raise UserExistsError(user_id) from None
        await self.db.run("create_user", fn)

    async def get_user(self, user_id: str) -> UserRecord | None:
        rows = await self.db.query(f"SELECT {_USER_COLS} FROM users WHERE user_id = ?", (user_id,))
        return _user(rows[0]) if rows else None

    async def get_user_case_insensitive(self, user_id: str) -> list[UserRecord]:
        rows = await self.db.query(
            f"SELECT {_USER_COLS} FROM users WHERE LOWER(user_id) = LOWER(?)", (user_id,))
        return [_user(r) for r in rows]

    async def user_id_taken(self, user_id: str) -> bool:
        rows = await self.db.query("SELECT 1 FROM users WHERE LOWER(user_id) = LOWER(?)", (user_id,))
        return bool(rows)

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> None:
        await self.db.execute("UPDATE users SET password_hash = ? WHERE user_id = ?",
                              (password_hash, user_id))

    @_writes_tokens
    async def set_admin(self, user_id: str, admin: bool) -> None:
        await self.db.execute("UPDATE users SET admin = ? WHERE user_id = ?", (admin, user_id))

    async def set_last_login(self, user_id: str, now: int) -> None:
        await self.db.execute("UPDATE users SET last_login_ts = ? WHERE user_id = ?", (now, user_id))

    async def count_users(self) -> int:
        rows = await self.db.query("SELECT COUNT(*) FROM users WHERE deactivated = FALSE")
        return int(rows[0][0])

    @_writes_tokens
    async def deactivate_user(self, user_id: str, now: int, *, erase: bool = False) -> None:
        """Mark deactivated, drop every session, device and IP record; keep the id reserved."""
        def fn(txn: Transaction) -> None:
            txn.execute("UPDATE users SET deactivated = TRUE, deactivated_ts = ?, password_hash = NULL,"
                        " erased = ? WHERE user_id = ?", (now, erase, user_id))
            txn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
            txn.execute("DELETE FROM refresh_tokens WHERE user_id = ?", (user_id,))
            txn.execute("DELETE FROM devices WHERE user_id = ?", (user_id,))
            txn.execute("DELETE FROM user_ips WHERE user_id = ?", (user_id,))
        await self.db.run("deactivate_user", fn)

    # --- devices -------------------------------------------------------------------------------

    async def upsert_device(self, user_id: str, device_id: str, display_name: str | None,
                            now: int) -> bool:
        """Create the device if new (returns True); an existing device keeps its name unless given."""
        def fn(txn: Transaction) -> bool:
            row = txn.query_one("SELECT display_name FROM devices WHERE user_id = ? AND device_id = ?",
                                (user_id, device_id))
            if row is None:
                txn.execute("INSERT INTO devices (user_id, device_id, display_name, created_ts)"
                            " VALUES (?, ?, ?, ?)", (user_id, device_id, display_name, now))
                return True
            if display_name is not None:
                txn.execute("UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                            (display_name, user_id, device_id))
            return False
        return await self.db.run("upsert_device", fn)

    async def get_device(self, user_id: str, device_id: str) -> DeviceRecord | None:
        rows = await self.db.query(f"SELECT {_DEVICE_COLS} FROM devices"
                                   " WHERE user_id = ? AND device_id = ?", (user_id, device_id))
        return _device(rows[0]) if rows else None

    async def get_devices(self, user_id: str) -> list[DeviceRecord]:
        rows = await self.db.query(f"SELECT {_DEVICE_COLS} FROM devices WHERE user_id = ?"
                                   " ORDER BY created_ts, device_id", (user_id,))
        return [_device(r) for r in rows]

    async def set_device_display_name(self, user_id: str, device_id: str, name: str | None) -> bool:
        n = await self.db.execute("UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                                  (name, user_id, device_id))
        return n > 0

    @_writes_tokens
    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Delete devices with their tokens and IP records, all or nothing."""
        def fn(txn: Transaction) -> None:
            for device_id in device_ids:
                args = (user_id, device_id)
                txn.execute("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", args)
                txn.execute("DELETE FROM refresh_tokens WHERE user_id = ? AND device_id = ?", args)
                txn.execute("DELETE FROM user_ips WHERE user_id = ? AND device_id = ?", args)
                txn.execute("DELETE FROM devices WHERE user_id = ? AND device_id = ?", args)
        await self.db.run("delete_devices", fn)

    # --- tokens --------------------------------------------------------------------------------

    async def add_access_token(self, token_hash: str, user_id: str, device_id: str, now: int,
                               valid_until_ts: int | None = None,
                               refresh_token_hash: str | None = None) -> None:
        await self.db.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, valid_until_ts,"
            " refresh_token_hash) VALUES (?, ?, ?, ?, ?, ?)",
            (token_hash, user_id, device_id, now, valid_until_ts, refresh_token_hash))

    async def get_access_token(self, token_hash: str) -> TokenRecord | None:
        cached = self._tokens.get(token_hash)
        if cached is not None:
            return cached
        generation, writing = self._token_generation, self._token_writes
        rows = await self.db.query(
            "SELECT t.token_hash, t.user_id, t.device_id, t.valid_until_ts, t.refresh_token_hash,"
            " t.used, u.is_guest, u.admin, u.deactivated"
            " FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = ?",
            (token_hash,))
        if not rows:
            return None
        r = rows[0]
        rec = TokenRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5]), bool(r[6]), bool(r[7]), bool(r[8]))
        # Only cache if no write happened while we read (it could have made this answer stale).
        if generation == self._token_generation and not writing and not self._token_writes:
            if len(self._tokens) >= 100_000:
                self._tokens.clear()
            self._tokens[token_hash] = rec
        return rec

    @_writes_tokens
    async def delete_access_token(self, token_hash: str) -> None:
        await self.db.execute("DELETE FROM access_tokens WHERE token_hash = ?", (token_hash,))

    @_writes_tokens
    async def delete_user_tokens(self, user_id: str, except_device_id: str | None = None) -> list[str]:
        """Delete a user's tokens (keeping one device's); returns the devices whose tokens went."""
        def fn(txn: Transaction) -> list[str]:
            if except_device_id is None:
                devices = [r[0] for r in txn.query(
                    "SELECT DISTINCT device_id FROM access_tokens WHERE user_id = ?", (user_id,))]
                txn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
                txn.execute("DELETE FROM refresh_tokens WHERE user_id = ?", (user_id,))
            else:
                args = (user_id, except_device_id)
                devices = [r[0] for r in txn.query(
                    "SELECT DISTINCT device_id FROM access_tokens WHERE user_id = ? AND device_id <> ?",
                    args)]
                txn.execute("DELETE FROM access_tokens WHERE user_id = ? AND device_id <> ?", args)
                txn.execute("DELETE FROM refresh_tokens WHERE user_id = ? AND device_id <> ?", args)
            return devices
        return await self.db.run("delete_user_tokens", fn)

    async def add_refresh_token(self, token_hash: str, user_id: str, device_id: str, now: int,
                                expiry_ts: int | None) -> None:
        await self.db.execute(
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, expiry_ts)"
            " VALUES (?, ?, ?, ?, ?)", (token_hash, user_id, device_id, now, expiry_ts))

    async def get_refresh_token(self, token_hash: str) -> RefreshRecord | None:
        rows = await self.db.query(
            "SELECT token_hash, user_id, device_id, expiry_ts, next_token_hash FROM refresh_tokens"
            " WHERE token_hash = ?", (token_hash,))
        return RefreshRecord(*rows[0]) if rows else None

    @_writes_tokens
    async def rotate_refresh_token(self, old_hash: str, new_refresh_hash: str, new_access_hash: str,
                                   user_id: str, device_id: str, now: int,
                                   access_valid_until: int, refresh_expiry: int | None) -> None:
        """Issue a new access/refresh pair for ``old_hash``; the old access tokens go at once.

        The old refresh token stays valid (so a lost response can be retried) until the new
        access or refresh token is first used; see ``consume_predecessor``.
        """
        def fn(txn: Transaction) -> None:
            txn.execute("DELETE FROM access_tokens WHERE refresh_token_hash = ?", (old_hash,))
            # A retried refresh replaces the successor handed out before, which was never used.
            row = txn.query_one("SELECT next_token_hash FROM refresh_tokens WHERE token_hash = ?",
                                (old_hash,))
            if row and row[0]:
                txn.execute("DELETE FROM access_tokens WHERE refresh_token_hash = ?", (row[0],))
                txn.execute("DELETE FROM refresh_tokens WHERE token_hash = ?", (row[0],))
            txn.execute("UPDATE refresh_tokens SET next_token_hash = ? WHERE token_hash = ?",
                        (new_refresh_hash, old_hash))
            txn.execute("INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts,"
                        " expiry_ts) VALUES (?, ?, ?, ?, ?)",
                        (new_refresh_hash, user_id, device_id, now, refresh_expiry))
            txn.execute("INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts,"
                        " valid_until_ts, refresh_token_hash) VALUES (?, ?, ?, ?, ?, ?)",
                        (new_access_hash, user_id, device_id, now, access_valid_until,
                         new_refresh_hash))
        await self.db.run("rotate_refresh_token", fn)

    @_writes_tokens
    async def consume_predecessor(self, refresh_hash: str) -> None:
        """The token pair after ``refresh_hash``'s predecessor has been used: revoke the predecessor."""
        def fn(txn: Transaction) -> None:
            rows = txn.query("SELECT token_hash FROM refresh_tokens WHERE next_token_hash = ?",
                             (refresh_hash,))
            for (old,) in rows:
                txn.execute("DELETE FROM access_tokens WHERE refresh_token_hash = ?", (old,))
                txn.execute("DELETE FROM refresh_tokens WHERE token_hash = ?", (old,))
            txn.execute("UPDATE access_tokens SET used = TRUE WHERE refresh_token_hash = ?",
                        (refresh_hash,))
        await self.db.run("consume_predecessor", fn)

    @_writes_tokens
    async def delete_refresh_token(self, token_hash: str) -> None:
        await self.db.execute("DELETE FROM refresh_tokens WHERE token_hash = ?", (token_hash,))
