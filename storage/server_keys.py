"""Other servers' signing keys as fetched for federation, with the signed responses they came in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from storage.database import Database, Transaction


@dataclass(frozen=True)
class StoredServerKey:
    """One verify key of a remote server, as the keyring learnt it."""

    server_name: str
    key_id: str
    verify_key: str             # unpadded base64
    valid_until_ts: int         # of the response it came in, as published
    expired_ts: int | None      # set for old_verify_keys, None for current keys
    fetched_ts: int
    from_server: str            # the server itself or the notary that vouched for it
    key_json: str               # the signed /_matrix/key/v2/server response, as received


_COLUMNS = ("server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts,"
            " from_server, key_json")


class ServerKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def store_keys(self, keys: Iterable[StoredServerKey]) -> None:
        """Insert or refresh keys; a row is replaced only by one with a valid_until_ts as late.

        The check is in the upsert itself, so two fetches racing cannot downgrade a key.
        """
        rows = [(k.server_name, k.key_id, k.verify_key, k.valid_until_ts, k.expired_ts,
                 k.fetched_ts, k.from_server, k.key_json) for k in keys]
        if not rows:
            return

        def fn(txn: Transaction) -> None:
            txn.executemany(
                f"INSERT INTO server_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (server_name, key_id) DO UPDATE SET"
                " verify_key = excluded.verify_key, valid_until_ts = excluded.valid_until_ts,"
                " expired_ts = excluded.expired_ts, fetched_ts = excluded.fetched_ts,"
                " from_server = excluded.from_server, key_json = excluded.key_json"
                " WHERE server_keys.valid_until_ts <= excluded.valid_until_ts", rows)
        await self.db.run("store_server_keys", fn)

    async def get_keys(self, server_name: str) -> list[StoredServerKey]:
        """Every key we hold for ``server_name``, latest response first."""
        rows = await self.db.query(
            f"SELECT {_COLUMNS} FROM server_keys WHERE server_name = ?"
            " ORDER BY valid_until_ts DESC, key_id", (server_name,))
        return [StoredServerKey(r[0], r[1], r[2], int(r[3]), None if r[4] is None else int(r[4]),
                                int(r[5]), r[6], r[7]) for r in rows]
