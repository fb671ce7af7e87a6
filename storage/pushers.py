"""Pushers: where to send a user's notifications, and how far each one has got."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction


@dataclass(frozen=True)
class Pusher:
    user_id: str
    app_id: str
    pushkey: str
    device_id: str | None
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]
    pushkey_ts: int  # ms
    last_stream_ordering: int
    failing_since: int | None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.user_id, self.app_id, self.pushkey)


_COLS = ("user_id, app_id, pushkey, device_id, kind, app_display_name, device_display_name,"
         " profile_tag, lang, data_json, pushkey_ts, last_stream_ordering, failing_since")


def _pusher(r: tuple) -> Pusher:
    return Pusher(*r[:9], json.loads(r[9]), *r[10:])  # type: ignore[misc]


class PusherStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def upsert(self, p: Pusher, *, replace_other_users: bool) -> list[tuple[str, str, str]]:
        """Create or update a pusher (an update keeps how far it has got). With
        ``replace_other_users``, other users' pushers with the same app id and pushkey are
        deleted. Returns the keys of the pushers deleted."""

        def fn(txn: Transaction) -> list[tuple[str, str, str]]:
            removed: list[tuple[str, str, str]] = []
            if replace_other_users:
                removed = [(u, p.app_id, p.pushkey) for (u,) in txn.query(
                    "SELECT user_id FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ?",
                    (p.app_id, p.pushkey, p.user_id))]
                txn.execute("DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ?",
                            (p.app_id, p.pushkey, p.user_id))
            txn.execute(
                f"INSERT INTO pushers ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET device_id = excluded.device_id,"
                " kind = excluded.kind, app_display_name = excluded.app_display_name,"
                " device_display_name = excluded.device_display_name,"
                " profile_tag = excluded.profile_tag, lang = excluded.lang,"
                " data_json = excluded.data_json, pushkey_ts = excluded.pushkey_ts",
                (p.user_id, p.app_id, p.pushkey, p.device_id, p.kind, p.app_display_name,
                 p.device_display_name, p.profile_tag, p.lang,
                 json.dumps(p.data, ensure_ascii=False, separators=(",", ":")), p.pushkey_ts,
                 p.last_stream_ordering, p.failing_since))
            return removed
        return await self.db.run("upsert_pusher", fn)

    async def get(self, user_id: str, app_id: str, pushkey: str) -> Pusher | None:
        rows = await self.db.query(f"SELECT {_COLS} FROM pushers WHERE user_id = ? AND app_id = ?"
                                   " AND pushkey = ?", (user_id, app_id, pushkey))
        return _pusher(rows[0]) if rows else None

    async def for_user(self, user_id: str) -> list[Pusher]:
        rows = await self.db.query(f"SELECT {_COLS} FROM pushers WHERE user_id = ?"
                                   " ORDER BY app_id, pushkey", (user_id,))
        return [_pusher(r) for r in rows]

    async def all(self) -> list[Pusher]:
        return [_pusher(r) for r in await self.db.query(f"SELECT {_COLS} FROM pushers")]

    async def delete(self, user_id: str, app_id: str, pushkey: str) -> bool:
        return await self.db.execute("DELETE FROM pushers WHERE user_id = ? AND app_id = ?"
                                     " AND pushkey = ?", (user_id, app_id, pushkey)) > 0

    async def delete_for_devices(self, user_id: str, device_ids: list[str]
                                 ) -> list[tuple[str, str, str]]:
        """Delete the pushers the given devices set up; returns their keys."""
        if not device_ids:
            return []
        marks = ",".join("?" * len(device_ids))

        def fn(txn: Transaction) -> list[tuple[str, str, str]]:
            keys = [(user_id, a, k) for a, k in txn.query(
                f"SELECT app_id, pushkey FROM pushers WHERE user_id = ? AND device_id IN ({marks})",
                (user_id, *device_ids))]
            txn.execute(f"DELETE FROM pushers WHERE user_id = ? AND device_id IN ({marks})",
                        (user_id, *device_ids))
            return keys
        return await self.db.run("delete_device_pushers", fn)

    async def set_progress(self, user_id: str, app_id: str, pushkey: str,
                           last_stream_ordering: int, failing_since: int | None) -> None:
        await self.db.execute(
            "UPDATE pushers SET last_stream_ordering = ?, failing_since = ? WHERE user_id = ?"
            " AND app_id = ? AND pushkey = ?",
            (last_stream_ordering, failing_since, user_id, app_id, pushkey))
