"""Membership: join, invite, leave, kick, ban, unban, knock, forget; member lists."""

from __future__ import annotations

from typing import Any

from homeserver.api.client.rooms import check_room_id
from homeserver.rooms.pagination import parse_token
from homeserver.http.errors import MatrixError
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.identifiers import check_user_id
from homeserver.rooms.serialize import ClientSerializer
from homeserver.rooms.service import RoomService
from storage.directory import DirectoryStore
from storage.events import EventStore

MEMBERSHIPS = ("join", "invite", "leave", "ban", "knock")


class MembershipApi:
    def __init__(self, rooms: RoomService, store: EventStore, directory: DirectoryStore,
                 serializer: ClientSerializer) -> None:
        self.rooms = rooms
        self.directory = directory
        self.store = store
        self.serializer = serializer
        self.server_name = rooms.server_name
        # async (alias) -> (room id, servers), asking the alias's server; set with federation.
        self.remote_alias: Any = None

    def register(self, router: Router) -> None:
        r = router.client
        r("POST", "/join/{roomIdOrAlias}", self.join_by_id_or_alias)
        r("POST", "/rooms/{roomId}/join", self.join)
        r("POST", "/rooms/{roomId}/invite", self.invite)
        r("POST", "/rooms/{roomId}/leave", self.leave, allow_guest=True)
        r("POST", "/rooms/{roomId}/kick", self.kick)
        r("POST", "/rooms/{roomId}/ban", self.ban)
        r("POST", "/rooms/{roomId}/unban", self.unban)
        r("POST", "/rooms/{roomId}/forget", self.forget, allow_guest=True)
        r("POST", "/knock/{roomIdOrAlias}", self.knock)
        r("GET", "/joined_rooms", self.joined_rooms, allow_guest=True)
        r("GET", "/rooms/{roomId}/members", self.members, allow_guest=True)
        r("GET", "/rooms/{roomId}/joined_members", self.joined_members, allow_guest=True)

    async def _resolve(self, room_id_or_alias: str) -> str:
        return (await self._resolve_with_servers(room_id_or_alias))[0]

    async def _resolve_with_servers(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        if room_id_or_alias.startswith("!"):
            check_room_id(room_id_or_alias)
            return room_id_or_alias, []
        if room_id_or_alias.startswith("#"):
            server = room_id_or_alias.split(":", 1)[1] if ":" in room_id_or_alias else ""
            if server != self.server_name and self.remote_alias is not None:
                return await self.remote_alias(room_id_or_alias)
            room_id = await self.directory.get_alias(room_id_or_alias)
            if room_id is None:
                raise MatrixError(404, "M_NOT_FOUND", f"Room alias {room_id_or_alias} not found")
            return room_id, []
        raise MatrixError(400, "M_INVALID_PARAM", "Expected a room id or alias")

    @staticmethod
    def _via(req: HttpRequest) -> list[str]:
        """Servers named by the client to join through (`via`, and the older `server_name`)."""
        return [s for s in (req.args.get("via", []) + req.args.get("server_name", [])) if s]

    async def _membership(self, req: HttpRequest, room_id: str, membership: str,
                          target: str | None = None, *, with_reason: bool = True,
                          servers: list[str] | None = None) -> tuple[int, Any]:
        assert req.requester is not None
        body = req.json(allow_empty=True)
        reason = body.str("reason") if with_reason else None
        if target is None:
            target = body.str("user_id", required=True)
            check_user_id(target)
        extra = {}
        if membership == "invite" and body.bool("is_direct"):
            extra["is_direct"] = True
        remote_possible = (self.remote_alias is not None and membership in ("join", "knock")
                           and (servers or ":" in room_id))
        if await self.store.get_room_version(room_id) is None and not remote_possible:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        await self.rooms.update_membership(room_id, req.requester.user_id, target, membership,
                                           reason=reason, extra=extra, servers=servers)
        return 200, ({"room_id": room_id} if membership in ("join", "knock") else {})

    async def join_by_id_or_alias(self, req: HttpRequest, roomIdOrAlias: str) -> tuple[int, Any]:
        room_id, servers = await self._resolve_with_servers(roomIdOrAlias)
        assert req.requester is not None
        return await self._membership(req, room_id, "join", req.requester.user_id,
                                      servers=servers + self._via(req))

    async def join(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        check_room_id(roomId)
        assert req.requester is not None
        return await self._membership(req, roomId, "join", req.requester.user_id,
                                      servers=self._via(req))

    async def knock(self, req: HttpRequest, roomIdOrAlias: str) -> tuple[int, Any]:
        room_id, servers = await self._resolve_with_servers(roomIdOrAlias)
        assert req.requester is not None
        return await self._membership(req, room_id, "knock", req.requester.user_id,
                                      servers=servers + self._via(req))

    async def invite(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        check_room_id(roomId)
        return await self._membership(req, roomId, "invite")

    async def leave(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        check_room_id(roomId)
        assert req.requester is not None
        current = await self.store.get_membership(roomId, req.requester.user_id)
        if current is None or current[0] in ("leave",):
            if current is None:
                raise MatrixError(404, "M_NOT_FOUND", "You are not in this room")
            return 200, {}
        return await self._membership(req, roomId, "leave", req.requester.user_id)

    async def kick(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        check_room_id(roomId)
        body = req.json()
        target = body.str("user_id", required=True)
        check_user_id(target)
        current = await self.store.get_membership(roomId, target)
        if current is None or current[0] not in ("join", "invite", "knock"):
            raise MatrixError(403, "M_FORBIDDEN", f"{target} is not in the room")
        return await self._membership(req, roomId, "leave", target)

    async def ban(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        check_room_id(roomId)
        return await self._membership(req, roomId, "ban")

    async def unban(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        check_room_id(roomId)
        body = req.json()
        target = body.str("user_id", required=True)
        check_user_id(target)
        current = await self.store.get_membership(roomId, target)
        if current is None or current[0] != "ban":
            raise MatrixError(403, "M_FORBIDDEN", f"{target} is not banned")
        return await self._membership(req, roomId, "leave", target)

    async def forget(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        current = await self.store.get_membership(roomId, req.requester.user_id)
        if current is None:
            raise MatrixError(404, "M_NOT_FOUND", "You were never in this room")
        if current[0] in ("join", "invite", "knock"):
            raise MatrixError(400, "M_UNKNOWN", "Leave the room before forgetting it")
        await self.store.set_forgotten(roomId, req.requester.user_id)
        return 200, {}

    async def joined_rooms(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        return 200, {"joined_rooms": await self.store.get_rooms_for_user(req.requester.user_id)}

    async def _member_state(self, req: HttpRequest, room_id: str) -> tuple[dict, int | None]:
        """The state the caller may read members from, and the stream position it stops at
        (None: current state, for joined members)."""
        assert req.requester is not None
        check_room_id(room_id)
        if await self.store.get_room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        membership = await self.store.get_membership(room_id, req.requester.user_id)
        if membership is None or membership[0] not in ("join", "leave", "ban"):
            raise MatrixError(403, "M_FORBIDDEN", "You are not a member of this room")
        if membership[0] == "join":
            return await self.store.get_current_state_ids(room_id), None
        row = await self.store.get_event_row(membership[1])
        assert row is not None and row.state_group_after is not None
        return await self.store.get_state_group(row.state_group_after), row.stream_ordering

    async def members(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        state, cap = await self._member_state(req, roomId)
        at = req.query("at")
        if at is not None:
            # The membership as it was at that point of the timeline, never later than the
            # caller's leave. Tokens name the last event they cover, so include it.
            depth, stream = parse_token(at)
            rows = await self.store.paginate(roomId, (depth, stream + 1), True, 1)
            if rows and rows[0].state_group_after is not None and (
                    cap is None or rows[0].stream_ordering <= cap):
                state = await self.store.get_state_group(rows[0].state_group_after)
        membership = req.query("membership")
        not_membership = req.query("not_membership")
        for v in (membership, not_membership):
            if v is not None and v not in MEMBERSHIPS:
                raise MatrixError(400, "M_INVALID_PARAM", f"Unknown membership {v!r}")
        ids = [e for (t, _), e in state.items() if t == "m.room.member"]
        rows = await self.store.get_rows(ids)
        chosen = []
        for i in ids:
            row = rows.get(i)
            if row is None:
                continue
            m = row.event.membership
            if membership is not None and m != membership:
                continue
            if not_membership is not None and m == not_membership:
                continue
            chosen.append(row)
        return 200, {"chunk": await self.serializer.serialize(chosen)}

    async def joined_members(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        state, _ = await self._member_state(req, roomId)
        ids = [e for (t, _), e in state.items() if t == "m.room.member"]
        events = await self.store.get_events(ids)
        joined: dict[str, Any] = {}
        for ev in events.values():
            if ev.membership == "join" and ev.state_key:
                info = {}
                for k in ("displayname", "avatar_url"):
                    if isinstance(ev.content.get(k), str):
                        info["display_name" if k == "displayname" else k] = ev.content[k]
                joined[ev.state_key] = info
        return 200, {"joined": joined}
