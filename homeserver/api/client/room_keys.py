"""/room_keys/version and /room_keys/keys: server-side backups of a user's megolm keys."""

from __future__ import annotations

import json
from typing import Any

from homeserver.api.client.rooms import check_room_id
from homeserver.e2ee.room_keys import RoomKeyBackupService, UploadedKey, key_json
from homeserver.http.errors import MatrixError, bad_json
from homeserver.http.jsonbody import JsonObject
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from storage.room_keys import BackupKey, KeyRow

MAX_SESSION_ID_BYTES = 255
MAX_COUNTER = 2 ** 53 - 1  # integers the spec's JSON lets clients send exactly


def _dump(value: dict[str, Any]) -> str:
    # Compact and in the client's key order: what a compact client sent comes back unchanged.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _counter(obj: JsonObject, name: str) -> int:
    value = obj.int(name, required=True)
    if not 0 <= value <= MAX_COUNTER:
        raise MatrixError(400, "M_INVALID_PARAM", f"'{name}' must be a non-negative integer")
    return value


def check_session_id(session_id: Any) -> None:
    if not isinstance(session_id, str) or not session_id \
            or len(session_id.encode("utf-8")) > MAX_SESSION_ID_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid session id")


def parse_key(data: Any) -> BackupKey:
    """KeyBackupData; session_data must be an object and is otherwise left alone."""
    obj = JsonObject(data)
    fmi = _counter(obj, "first_message_index")
    forwarded = _counter(obj, "forwarded_count")
    verified = obj.bool("is_verified", required=True)
    session_data = obj.dict("session_data", required=True)
    return BackupKey(fmi, forwarded, verified, _dump(session_data))


def parse_room(room_id: str, data: Any) -> list[UploadedKey]:
    """RoomKeyBackup: {"sessions": {session_id: KeyBackupData}}."""
    check_room_id(room_id)
    sessions = JsonObject(data).dict("sessions", required=True)
    out = []
    for session_id, key in sessions.items():
        check_session_id(session_id)
        out.append(UploadedKey(room_id, session_id, parse_key(key)))
    return out


def _key_out(key: BackupKey) -> dict[str, Any]:
    return key_json(key, json.loads(key.session_data))


def _rooms_out(rows: list[KeyRow]) -> dict[str, Any]:
    rooms: dict[str, Any] = {}
    for room_id, session_id, key in rows:
        rooms.setdefault(room_id, {"sessions": {}})["sessions"][session_id] = _key_out(key)
    return rooms


class RoomKeysApi:
    def __init__(self, service: RoomKeyBackupService) -> None:
        self.service = service

    def register(self, router: Router) -> None:
        r = router.client
        r("POST", "/room_keys/version", self.create_version)
        r("GET", "/room_keys/version", self.get_current_version)
        r("GET", "/room_keys/version/{version}", self.get_version)
        r("PUT", "/room_keys/version/{version}", self.update_version)
        r("DELETE", "/room_keys/version/{version}", self.delete_version)
        for suffix in ("", "/{roomId}", "/{roomId}/{sessionId}"):
            r("PUT", "/room_keys/keys" + suffix, self.put_keys)
            r("GET", "/room_keys/keys" + suffix, self.get_keys)
            r("DELETE", "/room_keys/keys" + suffix, self.delete_keys)

    @staticmethod
    def _user(req: HttpRequest) -> str:
        assert req.requester is not None
        return req.requester.user_id

    # --- versions ------------------------------------------------------------------------------

    async def create_version(self, req: HttpRequest) -> tuple[int, Any]:
        body = req.json()
        algorithm = body.str("algorithm", required=True)
        auth_data = body.dict("auth_data", required=True)
        version = await self.service.create_version(self._user(req), algorithm, auth_data)
        return 200, {"version": version}

    async def get_current_version(self, req: HttpRequest) -> tuple[int, Any]:
        return 200, await self.service.get_version(self._user(req), None)

    async def get_version(self, req: HttpRequest, version: str) -> tuple[int, Any]:
        return 200, await self.service.get_version(self._user(req), version)

    async def update_version(self, req: HttpRequest, version: str) -> tuple[int, Any]:
        body = req.json()
        algorithm = body.str("algorithm", required=True)
        auth_data = body.dict("auth_data", required=True)
        body_version = body.str("version")
        await self.service.update_version(self._user(req), version, algorithm, auth_data,
                                          body_version)
        return 200, {}

    async def delete_version(self, req: HttpRequest, version: str) -> tuple[int, Any]:
        await self.service.delete_version(self._user(req), version)
        return 200, {}

    # --- keys ----------------------------------------------------------------------------------

    @staticmethod
    def _target(roomId: str | None, sessionId: str | None) -> None:
        if roomId is not None:
            check_room_id(roomId)
        if sessionId is not None:
            check_session_id(sessionId)

    async def put_keys(self, req: HttpRequest, roomId: str | None = None,
                       sessionId: str | None = None) -> tuple[int, Any]:
        version = req.query("version", required=True)
        assert version is not None
        self._target(roomId, sessionId)
        data = req.json_value()
        if sessionId is not None:
            assert roomId is not None
            keys = [UploadedKey(roomId, sessionId, parse_key(data))]
        elif roomId is not None:
            keys = parse_room(roomId, data)
        else:
            rooms = JsonObject(data).dict("rooms", required=True)
            keys = []
            for room_id, room in rooms.items():
                if not isinstance(room, dict):
                    raise bad_json(f"rooms[{room_id!r}] must be an object")
                keys += parse_room(room_id, room)
        return 200, await self.service.put_keys(self._user(req), version, keys)

    async def get_keys(self, req: HttpRequest, roomId: str | None = None,
                       sessionId: str | None = None) -> tuple[int, Any]:
        version = req.query("version", required=True)
        assert version is not None
        self._target(roomId, sessionId)
        rows = await self.service.get_keys(self._user(req), version, roomId, sessionId)
        if sessionId is not None:
            return 200, _key_out(rows[0][2])
        if roomId is not None:
            return 200, _rooms_out(rows).get(roomId, {"sessions": {}})
        return 200, {"rooms": _rooms_out(rows)}

    async def delete_keys(self, req: HttpRequest, roomId: str | None = None,
                          sessionId: str | None = None) -> tuple[int, Any]:
        version = req.query("version", required=True)
        assert version is not None
        self._target(roomId, sessionId)
        return 200, await self.service.delete_keys(self._user(req), version, roomId, sessionId)
