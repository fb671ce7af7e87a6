"""Room aliases (/directory/room), room visibility in the directory, and /publicRooms."""

from __future__ import annotations

import re
from typing import Any

from homeserver.api.client.rooms import check_room_id
from homeserver.clock import Clock
from homeserver.http.errors import MatrixError
from homeserver.http.jsonbody import JsonObject
from homeserver.http.router import AUTH_OPTIONAL, Router
from homeserver.http.site import HttpRequest
from homeserver.rooms.power_levels import get_required_level
from homeserver.rooms.service import RoomService
from storage.directory import DirectoryStore
from storage.events import EventStore

_ALIAS = re.compile(r"^#([^:\s]+):(.+)$")
MAX_PUBLIC_ROOMS = 500


def parse_alias(alias: str) -> tuple[str, str]:
    m = _ALIAS.match(alias)
    if not m or len(alias.encode("utf-8")) > 255:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid room alias: {alias!r}")
    return m.group(1), m.group(2)


class DirectoryApi:
    def __init__(self, directory: DirectoryStore, store: EventStore, rooms: RoomService,
                 clock: Clock, server_name: str) -> None:
        self.directory = directory
        self.store = store
        self.rooms = rooms
        self.clock = clock
        self.server_name = server_name
        # async (server, limit, since, term) -> another server's /publicRooms (federation).
        self.remote_public_rooms: Any = None

    def register(self, router: Router) -> None:
        r = router.client
        r("PUT", "/directory/room/{roomAlias}", self.put_alias)
        r("GET", "/directory/room/{roomAlias}", self.get_alias, allow_guest=True)
        r("DELETE", "/directory/room/{roomAlias}", self.delete_alias)
        r("GET", "/rooms/{roomId}/aliases", self.room_aliases, allow_guest=True)
        r("GET", "/directory/list/room/{roomId}", self.get_visibility, auth=AUTH_OPTIONAL)
        r("PUT", "/directory/list/room/{roomId}", self.put_visibility)
        r("GET", "/publicRooms", self.public_rooms_get, auth=AUTH_OPTIONAL)
        r("POST", "/publicRooms", self.public_rooms_post)

    async def _can_manage(self, room_id: str, user_id: str, is_admin: bool) -> bool:
        """Room moderators (who may set the canonical alias) and server admins."""
        if is_admin:
            return True
        level, pl = await self.rooms.power_of(room_id, user_id)
        return level >= get_required_level("m.room.canonical_alias", True, pl)

    async def put_alias(self, req: HttpRequest, roomAlias: str) -> tuple[int, Any]:
        assert req.requester is not None
        _, server = parse_alias(roomAlias)
        if server != self.server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "Aliases must be on this server's domain")
        room_id = req.json().str("room_id", required=True)
        check_room_id(room_id)
        if await self.store.get_room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        membership = await self.store.get_membership(room_id, req.requester.user_id)
        if (membership is None or membership[0] != "join") and not req.requester.is_admin:
            raise MatrixError(403, "M_FORBIDDEN", "You must be in the room to give it an alias")
        if not await self.directory.create_alias(roomAlias, room_id, req.requester.user_id,
                                                 self.clock.time_msec()):
            raise MatrixError(409, "M_UNKNOWN", f"Room alias {roomAlias} already exists")
        return 200, {}

    async def get_alias(self, req: HttpRequest, roomAlias: str) -> tuple[int, Any]:
        _, server = parse_alias(roomAlias)
        room_id = await self.directory.get_alias(roomAlias)
        if room_id is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Room alias {roomAlias} not found")
        return 200, {"room_id": room_id, "servers": [self.server_name]}

    async def delete_alias(self, req: HttpRequest, roomAlias: str) -> tuple[int, Any]:
        assert req.requester is not None
        parse_alias(roomAlias)
        row = await self.directory.get_alias_row(roomAlias)
        if row is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Room alias {roomAlias} not found")
        room_id, creator = row
        if creator != req.requester.user_id and not await self._can_manage(
                room_id, req.requester.user_id, req.requester.is_admin):
            raise MatrixError(403, "M_FORBIDDEN", "You may not delete this alias")
        await self.directory.delete_alias(roomAlias)
        return 200, {}

    async def room_aliases(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        if await self.store.get_room_version(roomId) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        membership = await self.store.get_membership(roomId, req.requester.user_id)
        if membership is None or membership[0] != "join":
            if not await self.rooms.world_readable(roomId):
                raise MatrixError(403, "M_FORBIDDEN", "You are not in this room")
        return 200, {"aliases": await self.directory.get_aliases_for_room(roomId)}

    async def get_visibility(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        check_room_id(roomId)
        public = await self.directory.is_public(roomId)
        if public is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        return 200, {"visibility": "public" if public else "private"}

    async def put_visibility(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        visibility = req.json().str("visibility", default="public")
        if visibility not in ("public", "private"):
            raise MatrixError(400, "M_INVALID_PARAM", "visibility must be 'public' or 'private'")
        if await self.directory.is_public(roomId) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        if not await self._can_manage(roomId, req.requester.user_id, req.requester.is_admin):
            raise MatrixError(403, "M_FORBIDDEN", "You may not change this room's directory listing")
        await self.directory.set_public(roomId, visibility == "public")
        return 200, {}

    async def public_rooms_get(self, req: HttpRequest) -> tuple[int, Any]:
        limit = req.query_int("limit", None, lo=0)
        return await self._public_rooms(req.query("server"), limit, req.query("since"), None)

    async def public_rooms_post(self, req: HttpRequest) -> tuple[int, Any]:
        body = req.json(allow_empty=True)
        limit = body.int("limit")
        if limit is not None and limit < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
        flt = body.dict("filter", default={})
        term = JsonObject(flt).str("generic_search_term")
        return await self._public_rooms(req.query("server"), limit, body.str("since"), term)

    async def _public_rooms(self, server: str | None, limit: int | None, since: str | None,
                            term: str | None) -> tuple[int, Any]:
        if server is not None and server != self.server_name:
            if self.remote_public_rooms is None:
                raise MatrixError(404, "M_NOT_FOUND", "Room directories of other servers need federation")
            return 200, await self.remote_public_rooms(server, limit, since, term)
        return 200, await self.local_public_rooms(limit, since, term)

    async def local_public_rooms(self, limit: int | None, since: str | None,
                                 term: str | None) -> dict[str, Any]:
        """This server's published rooms, for clients and (when allowed) other servers."""
        offset = 0
        if since:
            if not re.fullmatch(r"o\d{1,9}", since):
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid since token: {since!r}")
            offset = int(since[1:])
        entries = []
        for room_id in await self.directory.public_room_ids():
            entry = await self.rooms.directory_entry(room_id)
            if term:
                hay = " ".join(str(entry.get(k, "")) for k in ("name", "topic", "canonical_alias"))
                if term.lower() not in hay.lower():
                    continue
            entries.append(entry)
        entries.sort(key=lambda e: (-e["num_joined_members"], e["room_id"]))
        limit = min(limit if limit is not None else MAX_PUBLIC_ROOMS, MAX_PUBLIC_ROOMS)
        page = entries[offset:offset + limit]
        out: dict[str, Any] = {"chunk": page, "total_room_count_estimate": len(entries)}
        if offset + limit < len(entries):
            out["next_batch"] = f"o{offset + limit}"
        if offset > 0:
            out["prev_batch"] = f"o{max(0, offset - limit)}"
        return out
