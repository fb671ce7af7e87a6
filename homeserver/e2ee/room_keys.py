"""Server-side key backups (spec: Client-Server API "Server-side key backups").

The server keeps encrypted copies of megolm session keys for their owner. It never decrypts
them: session_data is stored and served as the client's opaque JSON. When a key arrives for a
session already backed up, ``replaces`` decides which one stays, in the spec's order (Synapse
orders these differently; the spec wins).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.http.errors import MatrixError, not_found
from storage.room_keys import BackupKey, BackupVersion, KeyRow, NoBackup, NotCurrentVersion, RoomKeyStore

ALGORITHMS = frozenset({"m.megolm_backup.v1.curve25519-aes-sha2"})

# Versions are opaque strings to clients; here they are decimal numbers from 1, written without
# leading zeros, so any other string names no version at all.
_VERSION = re.compile(r"^[1-9][0-9]{0,17}$")


class KeyMetadata(Protocol):
    @property
    def first_message_index(self) -> int: ...

    @property
    def forwarded_count(self) -> int: ...

    @property
    def is_verified(self) -> bool: ...


def replaces(stored: KeyMetadata, new: KeyMetadata) -> bool:
    """Whether an uploaded key ``new`` takes the place of the ``stored`` one.

    Spec order: a verified key beats an unverified one; with equal verification, the lower
    first_message_index wins (it decrypts more of the session); with both equal, the lower
    forwarded_count wins. A key equal in all three keeps the stored one.
    """
    if new.is_verified != stored.is_verified:
        return new.is_verified
    if new.first_message_index != stored.first_message_index:
        return new.first_message_index < stored.first_message_index
    return new.forwarded_count < stored.forwarded_count


@dataclass(frozen=True)
class UploadedKey:
    room_id: str
    session_id: str
    key: BackupKey


def parse_version(version: str) -> int | None:
    return int(version) if _VERSION.match(version) else None


def version_json(v: BackupVersion) -> dict[str, Any]:
    return {"algorithm": v.algorithm, "auth_data": v.auth_data, "count": v.count,
            "etag": str(v.etag), "version": str(v.version)}


def key_json(key: BackupKey, session_data: Any) -> dict[str, Any]:
    return {"first_message_index": key.first_message_index, "forwarded_count": key.forwarded_count,
            "is_verified": key.is_verified, "session_data": session_data}


def _unknown_version() -> MatrixError:
    return not_found("Unknown backup version")


def _wrong_version(current: int) -> MatrixError:
    # The spec's current_version is the version keys must now go to (Synapse sends the one
    # the client asked for).
    return MatrixError(403, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version.",
                       current_version=str(current))


def check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise MatrixError(400, "M_INVALID_PARAM", f"Unsupported backup algorithm: {algorithm!r}")


class RoomKeyBackupService:
    def __init__(self, store: RoomKeyStore) -> None:
        self.store = store

    # --- versions ------------------------------------------------------------------------------

    async def create_version(self, user_id: str, algorithm: str, auth_data: dict[str, Any]) -> str:
        check_algorithm(algorithm)
        return str(await self.store.create_version(user_id, algorithm, auth_data))

    async def get_version(self, user_id: str, version: str | None) -> dict[str, Any]:
        """The given version, or the current one when ``version`` is None; 404 if none."""
        if version is None:
            info = await self.store.get_version(user_id, None)
            if info is None:
                raise not_found("No current backup version")
            return version_json(info)
        number = parse_version(version)
        info = await self.store.get_version(user_id, number) if number is not None else None
        if info is None:
            raise _unknown_version()
        return version_json(info)

    async def update_version(self, user_id: str, version: str, algorithm: str,
                             auth_data: dict[str, Any], body_version: str | None) -> None:
        """Only auth_data can change; the algorithm (and a version in the body) must match."""
        number = parse_version(version)
        info = await self.store.get_version(user_id, number) if number is not None else None
        if info is None or number is None:
            raise _unknown_version()
        if body_version is not None and body_version != version:
            raise MatrixError(400, "M_INVALID_PARAM", "Version in body does not match the path")
        if algorithm != info.algorithm:
            raise MatrixError(400, "M_INVALID_PARAM", "Algorithm does not match")
        if not await self.store.update_auth_data(user_id, number, auth_data):
            raise _unknown_version()  # deleted meanwhile

    async def delete_version(self, user_id: str, version: str) -> None:
        number = parse_version(version)
        if number is None or not await self.store.delete_version(user_id, number):
            raise _unknown_version()

    # --- keys ----------------------------------------------------------------------------------

    async def put_keys(self, user_id: str, version: str, keys: list[UploadedKey]) -> dict[str, Any]:
        """Store keys in the current version; a stored key stays if it is the better one."""
        number = parse_version(version)
        try:
            if number is None:
                current = await self.store.current_version(user_id)
                if current is None:
                    raise NoBackup()
                raise NotCurrentVersion(current)
            etag, count = await self.store.put_keys(
                user_id, number, [(k.room_id, k.session_id, k.key) for k in keys], replaces)
        except NoBackup:
            raise _unknown_version() from None
        except NotCurrentVersion as e:
            raise _wrong_version(e.current) from None
        return {"etag": str(etag), "count": count}

    async def get_keys(self, user_id: str, version: str, room_id: str | None = None,
                       session_id: str | None = None) -> list[KeyRow]:
        """Keys of an existing version (any, not only the current: a client may restore from
        an older backup); 404 if the version does not exist."""
        number = parse_version(version)
        rows = await self.store.get_keys(user_id, number, room_id, session_id) \
            if number is not None else None
        if rows is None:
            raise _unknown_version()
        if session_id is not None and not rows:
            raise not_found("Key not found.")
        return rows

    async def delete_keys(self, user_id: str, version: str, room_id: str | None = None,
                          session_id: str | None = None) -> dict[str, Any]:
        number = parse_version(version)
        result = await self.store.delete_keys(user_id, number, room_id, session_id) \
            if number is not None else None
        if result is None:
            raise _unknown_version()
        etag, count = result
        return {"etag": str(etag), "count": count}
