"""Rooms: /createRoom, send and state events, /event, /state, /messages, membership, /redact."""

from __future__ import annotations

import re
from typing import Any

from homeserver.http.errors import MatrixError
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.identifiers import check_user_id
from homeserver.rooms.pagination import parse_token, position_token
from homeserver.rooms.serialize import ClientSerializer
from homeserver.rooms.service import PRESETS, RoomService
from homeserver.rooms.upgrade import RoomUpgrader
from homeserver.rooms.visibility import Visibility
from homeserver.sync.filters import parse_room_event_filter
from storage.directory import DirectoryStore
from storage.events import EventRow, EventStore

MAX_STATE_KEY_BYTES = 255
MAX_TYPE_BYTES = 255
_ROOM_ID = re.compile(r"^![\x21-\x7e]+(:[A-Za-z0-9.\-\[\]:]+)?$")


def check_room_id(room_id: str) -> None:
    if not _ROOM_ID.match(room_id) or len(room_id.encode()) > 255:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid room id: {room_id!r}")


def check_type_and_key(event_type: str, state_key: str | None = None) -> None:
    if not event_type or len(event_type.encode("utf-8")) > MAX_TYPE_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", "Event type must be 1 to 255 bytes")
    if state_key is not None and len(state_key.encode("utf-8")) > MAX_STATE_KEY_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", "State key must be at most 255 bytes")


class RoomsApi:
    def __init__(self, rooms: RoomService, store: EventStore, visibility: Visibility,
                 serializer: ClientSerializer, upgrader: RoomUpgrader,
                 directory: DirectoryStore) -> None:
        self.rooms = rooms
        self.directory = directory
        self.upgrader = upgrader
        self.store = store
        self.visibility = visibility
        self.serializer = serializer
        # async (room id) -> events added: fetches older history from other servers
        # (federation); None when this server federates with nobody.
        self.backfill: Any = None

    def register(self, router: Router) -> None:
        r = router.client
        r("POST", "/createRoom", self.create_room)
        r("PUT", "/rooms/{roomId}/send/{eventType}/{txnId}", self.send)
        r("PUT", "/rooms/{roomId}/state/{eventType}", self.put_state_empty_key)
        r("PUT", "/rooms/{roomId}/state/{eventType}/{stateKey*}", self.put_state)
        r("GET", "/rooms/{roomId}/state", self.get_state, allow_guest=True)
        r("GET", "/rooms/{roomId}/state/{eventType}", self.get_state_event_empty_key, allow_guest=True)
        r("GET", "/rooms/{roomId}/state/{eventType}/{stateKey*}", self.get_state_event, allow_guest=True)
        r("GET", "/rooms/{roomId}/event/{eventId}", self.get_event, allow_guest=True)
        r("GET", "/rooms/{roomId}/messages", self.messages, allow_guest=True)
        r("GET", "/rooms/{roomId}/context/{eventId}", self.context, allow_guest=True)
        r("PUT", "/rooms/{roomId}/redact/{eventId}/{txnId}", self.redact)
        r("POST", "/rooms/{roomId}/upgrade", self.upgrade)

    # --- create --------------------------------------------------------------------------------

    async def create_room(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        body = req.json(allow_empty=True)
        visibility = body.str("visibility", default="private")
        if visibility not in ("public", "private"):
            raise MatrixError(400, "M_INVALID_PARAM", "visibility must be 'public' or 'private'")
        preset = body.str("preset")
        if preset is not None and preset not in PRESETS:
            raise MatrixError(400, "M_INVALID_PARAM", f"preset must be one of {', '.join(PRESETS)}")
        room_version = body.str("room_version")
        creation_content = body.dict("creation_content", default={})
        name = body.str("name")
        topic = body.str("topic")
        alias = body.str("room_alias_name")
        invite = body.str_list("invite", default=[])
        for u in invite:
            check_user_id(u)
        if body.list("invite_3pid"):
            raise MatrixError(400, "M_UNKNOWN", "Third-party invites are not supported")
        is_direct = body.bool("is_direct", default=False)
        override = body.dict("power_level_content_override")
        initial_state = []
        for item in body.list("initial_state", default=[]):
            if not isinstance(item, dict) or not isinstance(item.get("type"), str) \
                    or not isinstance(item.get("content"), dict):
                raise MatrixError(400, "M_INVALID_PARAM",
                                  "initial_state entries need a string 'type' and object 'content'")
            key = item.get("state_key", "")
            if not isinstance(key, str):
                raise MatrixError(400, "M_INVALID_PARAM", "initial_state state_key must be a string")
            check_type_and_key(item["type"], key)
            initial_state.append((item["type"], key, item["content"]))
        if alias is not None and (not alias or ":" in alias or any(c.isspace() for c in alias)):
            raise MatrixError(400, "M_INVALID_PARAM", "room_alias_name must be a plain localpart")
        room_id = await self.rooms.create_room(
            req.requester.user_id, room_version=room_version, preset=preset, visibility=visibility,
            creation_content=creation_content, initial_state=initial_state, name=name, topic=topic,
            invite=invite, is_direct=is_direct, power_level_override=override,
            alias_localpart=alias)
        return 200, {"room_id": room_id}

    # --- send ----------------------------------------------------------------------------------

    async def send(self, req: HttpRequest, roomId: str, eventType: str, txnId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        check_type_and_key(eventType)
        content = req.json().data
        key = f"{req.requester.user_id}|{req.requester.device_id}|{txnId}"
        if eventType == "m.room.redaction":
            target_id = content.get("redacts")
            target = await self.store.get_event_row(target_id) if isinstance(target_id, str) else None
            if target is None or target.event.room_id != roomId:
                raise MatrixError(400, "M_INVALID_PARAM", "'redacts' must name an event in this room")
            reason = content.get("reason") if isinstance(content.get("reason"), str) else None
            ev = await self.rooms.redact(roomId, req.requester.user_id, target.event, reason, key)
            return 200, {"event_id": ev.event.event_id}
        ev = await self.rooms.send(roomId, req.requester.user_id, eventType, content, txn_key=key)
        return 200, {"event_id": ev.event.event_id}

    async def put_state_empty_key(self, req: HttpRequest, roomId: str, eventType: str) -> tuple[int, Any]:
        return await self.put_state(req, roomId, eventType, "")

    async def put_state(self, req: HttpRequest, roomId: str, eventType: str, stateKey: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        check_type_and_key(eventType, stateKey)
        content = req.json().data
        if eventType == "m.room.canonical_alias" and stateKey == "":
            await self._check_canonical_alias(roomId, content)
        if eventType == "m.room.member":
            ev = await self.rooms.update_membership(roomId, req.requester.user_id, stateKey,
                                                    str(content.get("membership")),
                                                    extra=content)
        else:
            ev = await self.rooms.send(roomId, req.requester.user_id, eventType, content,
                                       state_key=stateKey)
        return 200, {"event_id": ev.event.event_id}

    async def _check_canonical_alias(self, room_id: str, content: dict[str, Any]) -> None:
        """Spec: each alias in m.room.canonical_alias must point at this room (400 M_BAD_ALIAS)."""
        aliases = []
        if content.get("alias") is not None:
            aliases.append(content["alias"])
        alt = content.get("alt_aliases", [])
        if not isinstance(alt, list):
            raise MatrixError(400, "M_INVALID_PARAM", "'alt_aliases' must be a list")
        aliases += alt
        for alias in aliases:
            if not isinstance(alias, str) or not alias.startswith("#") or ":" not in alias:
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid room alias: {alias!r}")
            if await self.directory.get_alias(alias) != room_id:
                raise MatrixError(400, "M_BAD_ALIAS", f"{alias} does not point to this room")

    async def redact(self, req: HttpRequest, roomId: str, eventId: str, txnId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        body = req.json(allow_empty=True)
        reason = body.str("reason")
        target = await self.store.get_event_row(eventId)
        if target is None or target.event.room_id != roomId \
                or not await self.visibility.can_see(req.requester.user_id, target):
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        key = f"{req.requester.user_id}|{req.requester.device_id}|redact|{txnId}"
        ev = await self.rooms.redact(roomId, req.requester.user_id, target.event, reason, key)
        return 200, {"event_id": ev.event.event_id}

    # --- reading -------------------------------------------------------------------------------

    async def _readable_state_group(self, room_id: str, user_id: str) -> dict | None:
        """The state a user may read: current if joined, at their leave if they left; None if none."""
        membership = await self.store.get_membership(room_id, user_id)
        if membership and await self.store.get_forgotten(user_id, [room_id]):
            membership = None
        if membership and membership[0] == "join":
            return await self.store.get_current_state_ids(room_id)
        if membership and membership[0] in ("leave", "ban"):
            row = await self.store.get_event_row(membership[1])
            if row is not None and row.state_group_after is not None:
                return await self.store.get_state_group(row.state_group_after)
        current = await self.store.get_current_state_ids(room_id)
        hv_id = current.get(("m.room.history_visibility", ""))
        if hv_id:
            hv = (await self.store.get_events([hv_id])).get(hv_id)
            if hv is not None and hv.content.get("history_visibility") == "world_readable":
                return current
        return None

    async def _state_for(self, req: HttpRequest, room_id: str) -> dict:
        assert req.requester is not None
        check_room_id(room_id)
        if await self.store.get_room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        state = await self._readable_state_group(room_id, req.requester.user_id)
        if state is None:
            raise MatrixError(403, "M_FORBIDDEN", "You are not allowed to see this room's state")
        return state

    async def get_state(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        state = await self._state_for(req, roomId)
        rows = await self.store.get_rows(state.values())
        return 200, await self.serializer.serialize(rows[i] for i in state.values() if i in rows)

    async def get_state_event_empty_key(self, req: HttpRequest, roomId: str, eventType: str) -> tuple[int, Any]:
        return await self.get_state_event(req, roomId, eventType, "")

    async def get_state_event(self, req: HttpRequest, roomId: str, eventType: str,
                              stateKey: str) -> tuple[int, Any]:
        state = await self._state_for(req, roomId)
        event_id = state.get((eventType, stateKey))
        if event_id is None:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        row = await self.store.get_event_row(event_id)
        assert row is not None
        client = (await self.serializer.serialize([row]))[0]
        if req.query("format") == "event":
            return 200, client
        return 200, client["content"]

    async def get_event(self, req: HttpRequest, roomId: str, eventId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        row = await self.store.get_event_row(eventId)
        if row is None or row.event.room_id != roomId or row.outlier \
                or not await self.visibility.can_see(req.requester.user_id, row):
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        return 200, (await self.serializer.serialize([row], user_id=req.requester.user_id))[0]

    async def messages(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        if await self.store.get_room_version(roomId) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        direction = req.query("dir", "b")
        if direction not in ("b", "f"):
            raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'b' or 'f'")
        limit = req.query_int("limit", 10, lo=0, hi=1000) or 0
        from_token = req.query("from")
        to_token = req.query("to")
        backwards = direction == "b"
        # Reading is allowed to members past and present and, in world_readable rooms, to
        # anyone; which events each page shows is then the visibility filter's decision.
        membership = await self.store.get_membership(roomId, req.requester.user_id)
        forgotten = bool(await self.store.get_forgotten(req.requester.user_id, [roomId]))
        if (membership is None or forgotten) and not await self.rooms.world_readable(roomId):
            raise MatrixError(403, "M_FORBIDDEN", "You are not allowed to read this room")
        if from_token is not None:
            start = parse_token(from_token)
        elif backwards:
            start = (2**62, 2**62)
        else:
            start = (-(2**62), -(2**62))
        to_pos = parse_token(to_token) if to_token else None
        flt = parse_room_event_filter(req.query("filter") or "{}")
        if not flt.allows_room(roomId):
            rows: list[EventRow] = []
        else:
            rows = await self.store.paginate(roomId, start, backwards, limit, to_pos)
            if backwards and len(rows) < limit and self.backfill is not None \
                    and await self.backfill(roomId):
                # The start of what this server has: older history came from another server.
                rows = await self.store.paginate(roomId, start, backwards, limit, to_pos)
        visible = await self.visibility.filter_for_user(req.requester.user_id, rows)
        visible = [r for r in visible if flt.matches(r.event, roomId)]
        chunk = await self.serializer.serialize(visible, user_id=req.requester.user_id)
        out: dict[str, Any] = {"chunk": chunk,
                               "start": from_token or position_token(*start)}
        if flt.lazy_load_members and visible:
            out["state"] = await self._sender_members(visible)
        if rows and len(rows) == limit:
            last = rows[-1]
            out["end"] = position_token(last.event.depth, last.stream_ordering)
        return 200, out

    async def _sender_members(self, rows: list[EventRow]) -> list[dict[str, Any]]:
        """The senders' member events as of the newest of ``rows`` (lazy-loading members)."""
        newest = max(rows, key=lambda r: (r.event.depth, r.stream_ordering))
        if newest.state_group_after is None:
            return []
        state = await self.store.get_state_group(newest.state_group_after)
        ids = [state[("m.room.member", s)] for s in {r.event.sender for r in rows}
               if ("m.room.member", s) in state]
        members = await self.store.get_rows(ids)
        return await self.serializer.serialize(members[i] for i in ids if i in members)

    async def context(self, req: HttpRequest, roomId: str, eventId: str) -> tuple[int, Any]:
        """The event with up to ``limit`` events around it, and the room state at the end."""
        assert req.requester is not None
        check_room_id(roomId)
        limit = req.query_int("limit", 10, lo=0, hi=1000) or 0
        row = await self.store.get_event_row(eventId)
        if row is None or row.event.room_id != roomId or row.outlier \
                or not await self.visibility.can_see(req.requester.user_id, row):
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        pos = (row.event.depth, row.stream_ordering)
        before = await self.store.paginate(roomId, pos, True, limit // 2)
        after = await self.store.paginate(roomId, pos, False, limit - limit // 2)
        user = req.requester.user_id
        flt = parse_room_event_filter(req.query("filter") or "{}")
        before = [r for r in await self.visibility.filter_for_user(user, before)
                  if flt.matches(r.event, roomId)]
        after = [r for r in await self.visibility.filter_for_user(user, after)
                 if flt.matches(r.event, roomId)]
        first = before[-1] if before else row
        last = after[-1] if after else row
        group = last.state_group_after
        state_ids = list((await self.store.get_state_group(group)).values()) if group is not None else []
        state_rows = await self.store.get_rows(state_ids)
        timeline = await self.serializer.serialize([row, *before, *after], user_id=user)
        return 200, {
            "event": timeline[0],
            "events_before": timeline[1:1 + len(before)],
            "events_after": timeline[1 + len(before):],
            "state": await self.serializer.serialize(state_rows[i] for i in state_ids if i in state_rows),
            "start": position_token(first.event.depth, first.stream_ordering),
            "end": position_token(last.event.depth, last.stream_ordering),
        }

    async def upgrade(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        body = req.json()
        new_version = body.str("new_version", required=True)
        creators = body.str_list("additional_creators", default=[])
        for u in creators:
            check_user_id(u)
        membership = await self.store.get_membership(roomId, req.requester.user_id)
        if membership is None or membership[0] != "join":
            if await self.store.get_room_version(roomId) is None:
                raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
            raise MatrixError(403, "M_FORBIDDEN", "You are not in this room")
        new_room = await self.upgrader.upgrade(roomId, req.requester.user_id, new_version, creators)
        return 200, {"replacement_room": new_room}
