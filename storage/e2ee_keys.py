"""End-to-end encryption keys and the device_lists stream.

Keys are stored as the JSON text the client uploaded. One-time keys are claimed with a single
``DELETE ... RETURNING`` per key, which on PostgreSQL selects its row ``FOR UPDATE SKIP
LOCKED``: concurrent claimers never wait for each other and never get the same key. (SQLite has
one writer, so its transactions cannot interleave at all.)

Writes to the device_lists stream are serialised so that stream ids commit in the order they
are handed out: a reader that has seen position N has seen every change up to N.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from twisted.internet import defer

from storage.database import Database, Transaction
from storage.ids import IdGenerator

T = TypeVar("T")

_CHUNK = 200  # ids per IN (...) list

# Allocates a stream position and writes a stream row: (user_id, room_id, membership) -> pos.
StreamWriter = Callable[..., int]


class KeyConflict(Exception):
    """A one-time key id was uploaded again with different content."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class Signature:
    target_user_id: str
    target_key_id: str   # a device id, or a master key's public key
    signer_user_id: str
    signer_key_id: str   # "ed25519:<device id or public key>"
    signature: str


@dataclass(frozen=True)
class DeviceKeysRow:
    keys: dict[str, Any]
    display_name: str | None


@dataclass(frozen=True)
class ClaimedKey:
    name: str            # "<algorithm>:<key id>"
    key: Any
    fallback: bool


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _chunks(items: list[T]) -> Iterable[list[T]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


class E2eKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.stream_ids = IdGenerator("e2e_device_list_stream", "stream_id")
        self.upload_seqs = IdGenerator("e2e_one_time_keys", "upload_seq")
        self._write_lock = defer.DeferredLock()
        self._committed = 0

    async def load(self) -> None:
        await self.stream_ids.load(self.db)
        await self.upload_seqs.load(self.db)
        self._committed = self.stream_ids.current()

    def current_position(self) -> int:
        """The highest device_lists position whose write has committed."""
        return self._committed

    async def _with_stream(self, desc: str, fn: Callable[..., T], *args: Any) -> tuple[T, int | None]:
        """Run ``fn(txn, stream, *args)``; ``stream(user_id, room_id=None, membership=None)``
        writes a stream row. Returns fn's result and the last position written (or None)."""
        written: list[int] = []

        def run(txn: Transaction) -> T:
            written.clear()  # a retried transaction starts over

            def stream(user_id: str, room_id: str | None = None, membership: str | None = None) -> int:
                pos = self.stream_ids.next()
                txn.execute("INSERT INTO e2e_device_list_stream (stream_id, user_id, room_id, membership)"
                            " VALUES (?, ?, ?, ?)", (pos, user_id, room_id, membership))
                written.append(pos)
                return pos
            return fn(txn, stream, *args)

        async with self._write_lock:
            result = await self.db.run(desc, run)
            pos = max(written) if written else None
            if pos is not None:
                self._committed = max(self._committed, pos)
        return result, pos

    # --- device keys, one-time and fallback keys ---------------------------------------------------

    async def upload(self, user_id: str, device_id: str, now: int,
                     device_keys: dict[str, Any] | None,
                     accept_device_keys: Callable[[dict[str, Any] | None], bool],
                     one_time_keys: list[tuple[str, str, Any]],
                     fallback_keys: list[tuple[str, str, Any]]) -> tuple[dict[str, int], int | None]:
        """Store a /keys/upload in one transaction; returns (one-time key counts, the device_lists
        position written if the device keys changed).

        ``accept_device_keys(current)`` decides whether ``device_keys`` replaces the current
        object (it may raise to refuse). Keys are (algorithm, key id, object). Raises
        KeyConflict if a one-time key id is already stored with other content.
        """
        def fn(txn: Transaction, stream: StreamWriter) -> dict[str, int]:
            if device_keys is not None:
                row = txn.query_one("SELECT key_json FROM e2e_device_keys WHERE user_id = ?"
                                    " AND device_id = ?", (user_id, device_id))
                if accept_device_keys(json.loads(row[0]) if row else None):
                    txn.execute(
                        "INSERT INTO e2e_device_keys (user_id, device_id, key_json, ts) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json,"
                        " ts = excluded.ts", (user_id, device_id, _dump(device_keys), now))
                    stream(user_id)
            if one_time_keys:
                self._add_one_time_keys(txn, user_id, device_id, one_time_keys)
            for algorithm, key_id, key in fallback_keys:
                text = _dump(key)
                row = txn.query_one("SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = ?"
                                    " AND device_id = ? AND algorithm = ?", (user_id, device_id, algorithm))
                if row is not None and row[0] == key_id and json.loads(row[1]) == key:
                    continue  # the same key again: it keeps its used flag
                txn.execute(
                    "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)"
                    " VALUES (?, ?, ?, ?, ?, FALSE) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE"
                    " SET key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE",
                    (user_id, device_id, algorithm, key_id, text))
            return self._counts_txn(txn, user_id, device_id)

        if device_keys is None:
            # No stream row can be written: no need to queue behind stream writers.
            counts = await self.db.run("e2e_upload_keys", fn, lambda *a, **k: 0)
            return counts, None
        return await self._with_stream("e2e_upload_keys", fn)

    def _add_one_time_keys(self, txn: Transaction, user_id: str, device_id: str,
                           keys: list[tuple[str, str, Any]]) -> None:
        existing: dict[tuple[str, str], Any] = {}
        for chunk in _chunks(sorted({k for _, k, _ in keys})):
            marks = ",".join("?" * len(chunk))
            for algorithm, key_id, text in txn.query(
                    f"SELECT algorithm, key_id, key_json FROM e2e_one_time_keys WHERE user_id = ?"
                    f" AND device_id = ? AND key_id IN ({marks})", (user_id, device_id, *chunk)):
                existing[(algorithm, key_id)] = json.loads(text)
        seq = self.upload_seqs.next()  # one upload's keys are equivalent in claim order
        rows = []
        for algorithm, key_id, key in keys:
            if (algorithm, key_id) in existing:
                if existing[(algorithm, key_id)] != key:
                    raise KeyConflict(f"{algorithm}:{key_id}")
                continue
            rows.append((user_id, device_id, algorithm, key_id, _dump(key), seq))
        txn.executemany("INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json,"
                        " upload_seq) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)

    @staticmethod
    def _counts_txn(txn: Transaction, user_id: str, device_id: str) -> dict[str, int]:
        rows = txn.query("SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = ?"
                         " AND device_id = ? GROUP BY algorithm", (user_id, device_id))
        return {alg: int(n) for alg, n in rows}

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        return await self.db.run("e2e_otk_counts", self._counts_txn, user_id, device_id)

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        rows = await self.db.query("SELECT algorithm FROM e2e_fallback_keys WHERE user_id = ?"
                                   " AND device_id = ? AND used = FALSE ORDER BY algorithm",
                                   (user_id, device_id))
        return [r[0] for r in rows]

    async def get_device_keys(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        rows = await self.db.query("SELECT key_json FROM e2e_device_keys WHERE user_id = ?"
                                   " AND device_id = ?", (user_id, device_id))
        return json.loads(rows[0][0]) if rows else None

    async def query_device_keys(self, user_ids: Iterable[str]) -> dict[str, dict[str, DeviceKeysRow]]:
        """user -> device -> keys and display name, for every device with uploaded keys."""
        ids = sorted(set(user_ids))

        def fn(txn: Transaction) -> dict[str, dict[str, DeviceKeysRow]]:
            out: dict[str, dict[str, DeviceKeysRow]] = {}
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                for user_id, device_id, text, name in txn.query(
                        f"SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM e2e_device_keys k"
                        f" LEFT JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
                        f" WHERE k.user_id IN ({marks})", chunk):
                    out.setdefault(user_id, {})[device_id] = DeviceKeysRow(json.loads(text), name)
            return out
        return await self.db.run("e2e_query_device_keys", fn)

    async def claim(self, wanted: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], ClaimedKey]:
        """Claim one key per (user, device, algorithm): the oldest one-time key, which is deleted,
        or else the fallback key, which is marked used."""
        lock = " FOR UPDATE SKIP LOCKED" if self.db.engine_name == "psycopg2" else ""
        claim_sql = ("DELETE FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?"
                     " AND key_id = (SELECT key_id FROM e2e_one_time_keys WHERE user_id = ?"
                     " AND device_id = ? AND algorithm = ? ORDER BY upload_seq, key_id LIMIT 1" + lock + ")"
                     " RETURNING key_id, key_json")

        def fn(txn: Transaction) -> dict[tuple[str, str, str], ClaimedKey]:
            out: dict[tuple[str, str, str], ClaimedKey] = {}
            # A fixed order keeps concurrent claims from locking fallback rows crosswise.
            for user_id, device_id, algorithm in sorted(set(wanted)):
                row = txn.query_one(claim_sql, (user_id, device_id, algorithm) * 2)
                if row is not None:
                    out[(user_id, device_id, algorithm)] = ClaimedKey(
                        f"{algorithm}:{row[0]}", json.loads(row[1]), False)
                    continue
                row = txn.query_one("SELECT key_id, key_json, used FROM e2e_fallback_keys WHERE user_id = ?"
                                    " AND device_id = ? AND algorithm = ?", (user_id, device_id, algorithm))
                if row is None:
                    continue
                if not row[2]:
                    txn.execute("UPDATE e2e_fallback_keys SET used = TRUE WHERE user_id = ?"
                                " AND device_id = ? AND algorithm = ?", (user_id, device_id, algorithm))
                out[(user_id, device_id, algorithm)] = ClaimedKey(
                    f"{algorithm}:{row[0]}", json.loads(row[1]), True)
            return out
        return await self.db.run("e2e_claim_keys", fn)

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> int | None:
        """Forget the keys of deleted devices, the signatures on them and by them; returns the
        device_lists position written if any of them had keys."""
        def fn(txn: Transaction, stream: StreamWriter) -> None:
            had_keys = False
            for chunk in _chunks(sorted(set(device_ids))):
                marks = ",".join("?" * len(chunk))
                args = (user_id, *chunk)
                txn.execute(f"DELETE FROM e2e_device_keys WHERE user_id = ? AND device_id IN ({marks})", args)
                had_keys = had_keys or txn.rowcount > 0
                for table in ("e2e_one_time_keys", "e2e_fallback_keys"):
                    txn.execute(f"DELETE FROM {table} WHERE user_id = ? AND device_id IN ({marks})", args)
                txn.execute(f"DELETE FROM e2e_signatures WHERE target_user_id = ?"
                            f" AND target_key_id IN ({marks})", args)
                txn.execute(f"DELETE FROM e2e_signatures WHERE signer_user_id = ?"
                            f" AND signer_key_id IN ({marks})",
                            (user_id, *(f"ed25519:{d}" for d in chunk)))
            if had_keys:
                stream(user_id)
        _, pos = await self._with_stream("e2e_delete_devices", fn)
        return pos

    # --- cross-signing ---------------------------------------------------------------------------

    async def get_cross_signing_keys(self, user_ids: Iterable[str]
                                     ) -> dict[str, dict[str, dict[str, Any]]]:
        """user -> key type (master, self_signing, user_signing) -> key object."""
        ids = sorted(set(user_ids))

        def fn(txn: Transaction) -> dict[str, dict[str, dict[str, Any]]]:
            out: dict[str, dict[str, dict[str, Any]]] = {}
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                for user_id, key_type, text in txn.query(
                        f"SELECT user_id, key_type, key_json FROM e2e_cross_signing_keys"
                        f" WHERE user_id IN ({marks})", chunk):
                    out.setdefault(user_id, {})[key_type] = json.loads(text)
            return out
        return await self.db.run("e2e_get_cross_signing_keys", fn)

    async def set_cross_signing_keys(self, user_id: str, keys: dict[str, tuple[str, dict[str, Any]]],
                                     now: int) -> int | None:
        """Store key type -> (key id, object). Signatures made by a replaced key, and those
        uploaded for a replaced master key, go with it. Returns the position written."""
        def fn(txn: Transaction, stream: StreamWriter) -> None:
            for key_type, (key_id, obj) in sorted(keys.items()):
                row = txn.query_one("SELECT key_id FROM e2e_cross_signing_keys WHERE user_id = ?"
                                    " AND key_type = ?", (user_id, key_type))
                if row is not None and row[0] != key_id:
                    txn.execute("DELETE FROM e2e_signatures WHERE signer_user_id = ? AND signer_key_id = ?",
                                (user_id, row[0]))
                    if key_type == "master":
                        txn.execute("DELETE FROM e2e_signatures WHERE target_user_id = ?"
                                    " AND target_key_id = ?", (user_id, row[0].partition(":")[2]))
                txn.execute(
                    "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_id, key_json, ts)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, key_type) DO UPDATE"
                    " SET key_id = excluded.key_id, key_json = excluded.key_json, ts = excluded.ts",
                    (user_id, key_type, key_id, _dump(obj), now))
            if keys:
                stream(user_id)
        _, pos = await self._with_stream("e2e_set_cross_signing_keys", fn)
        return pos

    async def add_signatures(self, signatures: list[Signature]) -> int | None:
        """Store signatures (replacing one by the same key on the same target); one device_lists
        row per target user. Returns the last position written."""
        def fn(txn: Transaction, stream: StreamWriter) -> None:
            txn.executemany(
                "INSERT INTO e2e_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id,"
                " signature) VALUES (?, ?, ?, ?, ?) ON CONFLICT (target_user_id, target_key_id,"
                " signer_user_id, signer_key_id) DO UPDATE SET signature = excluded.signature",
                [(s.target_user_id, s.target_key_id, s.signer_user_id, s.signer_key_id, s.signature)
                 for s in signatures])
            for target in sorted({s.target_user_id for s in signatures}):
                stream(target)
        if not signatures:
            return None
        _, pos = await self._with_stream("e2e_add_signatures", fn)
        return pos

    async def get_signatures(self, target_user_ids: Iterable[str]) -> list[Signature]:
        ids = sorted(set(target_user_ids))

        def fn(txn: Transaction) -> list[Signature]:
            out = []
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                out += [Signature(*r) for r in txn.query(
                    f"SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature"
                    f" FROM e2e_signatures WHERE target_user_id IN ({marks})", chunk)]
            return out
        return await self.db.run("e2e_get_signatures", fn)

    # --- the device_lists stream -----------------------------------------------------------------

    async def record_key_change(self, user_id: str) -> int:
        """A change of a user's devices that no other write recorded; returns its position."""
        def fn(txn: Transaction, stream: StreamWriter) -> None:
            stream(user_id)
        _, pos = await self._with_stream("e2e_device_list_change", fn)
        assert pos is not None
        return pos

    async def record_membership(self, user_id: str, room_id: str, membership: str) -> int:
        """The user joined ('join') or left (anything else) a room; returns its position."""
        def fn(txn: Transaction, stream: StreamWriter) -> None:
            stream(user_id, room_id, membership)
        _, pos = await self._with_stream("e2e_device_list_membership", fn)
        assert pos is not None
        return pos

    async def membership_before(self, room_id: str, user_id: str, stream_ordering: int) -> str | None:
        """The user's membership in the room just before the event at ``stream_ordering``."""
        rows = await self.db.query(
            "SELECT membership FROM room_memberships WHERE room_id = ? AND user_id = ?"
            " AND stream_ordering < ? ORDER BY stream_ordering DESC LIMIT 1",
            (room_id, user_id, stream_ordering))
        return rows[0][0] if rows else None

    async def key_changes_seen_by(self, user_id: str, from_pos: int, to_pos: int) -> set[str]:
        """Users whose devices or keys changed in (from_pos, to_pos] and who are the user or
        share a joined room with them now."""
        rows = await self.db.query(
            "SELECT DISTINCT s.user_id FROM e2e_device_list_stream s"
            " WHERE s.stream_id > ? AND s.stream_id <= ? AND s.room_id IS NULL AND (s.user_id = ?"
            " OR s.user_id IN (SELECT m2.user_id FROM current_membership m1"
            " JOIN current_membership m2 ON m2.room_id = m1.room_id"
            " WHERE m1.user_id = ? AND m1.membership = 'join' AND m2.membership = 'join'))",
            (from_pos, to_pos, user_id, user_id))
        return {r[0] for r in rows}

    async def membership_changes_near(self, user_id: str, from_pos: int, to_pos: int
                                      ) -> list[tuple[str, str, str]]:
        """(user, room, membership) rows in (from_pos, to_pos], in order, for the user's own
        joins and leaves and for rooms the user has any membership in."""
        rows = await self.db.query(
            "SELECT user_id, room_id, membership FROM e2e_device_list_stream"
            " WHERE stream_id > ? AND stream_id <= ? AND room_id IS NOT NULL AND (user_id = ?"
            " OR room_id IN (SELECT room_id FROM current_membership WHERE user_id = ?))"
            " ORDER BY stream_id", (from_pos, to_pos, user_id, user_id))
        return [(u, r, m) for u, r, m in rows]

    async def sharing_a_room(self, user_id: str, candidates: Iterable[str]) -> set[str]:
        """The candidates who share a joined room with the user now."""
        ids = sorted(set(candidates))

        def fn(txn: Transaction) -> set[str]:
            out: set[str] = set()
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                out.update(r[0] for r in txn.query(
                    f"SELECT DISTINCT m2.user_id FROM current_membership m1"
                    f" JOIN current_membership m2 ON m2.room_id = m1.room_id"
                    f" WHERE m1.user_id = ? AND m1.membership = 'join' AND m2.membership = 'join'"
                    f" AND m2.user_id IN ({marks})", (user_id, *chunk)))
            return out
        return await self.db.run("e2e_sharing_a_room", fn)
