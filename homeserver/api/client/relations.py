"""Relations: GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]] and /threads."""

from __future__ import annotations

from typing import Any

from homeserver.api.client.rooms import check_room_id
from homeserver.rooms.pagination import parse_token, position_token
from homeserver.http.errors import MatrixError
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.rooms.relations import RECURSION_DEPTH, THREAD, RelationsService
from homeserver.rooms.serialize import ClientSerializer

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class RelationsApi:
    def __init__(self, relations: RelationsService, serializer: ClientSerializer) -> None:
        self.relations = relations
        self.serializer = serializer

    def register(self, router: Router) -> None:
        r = router.client
        v1 = ("v1",)
        r("GET", "/rooms/{roomId}/relations/{eventId}", self.get_relations, versions=v1)
        r("GET", "/rooms/{roomId}/relations/{eventId}/{relType}", self.get_relations, versions=v1)
        r("GET", "/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", self.get_relations,
          versions=v1)
        r("GET", "/rooms/{roomId}/threads", self.get_threads, versions=v1)

    @staticmethod
    def _limit(req: HttpRequest) -> int:
        limit = req.query_int("limit", DEFAULT_LIMIT, lo=0)
        return max(1, min(MAX_LIMIT, limit if limit is not None else DEFAULT_LIMIT))

    async def get_relations(self, req: HttpRequest, roomId: str, eventId: str,
                            relType: str | None = None, eventType: str | None = None
                            ) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        direction = req.query("dir", "b")
        if direction not in ("b", "f"):
            raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'b' or 'f'")
        limit = self._limit(req)
        from_token = req.query("from")
        to_token = req.query("to")
        from_pos = parse_token(from_token) if from_token else None
        to_pos = parse_token(to_token) if to_token else None
        recurse_given = req.query("recurse") is not None
        recurse = req.query_bool("recurse", False)
        user_id = req.requester.user_id
        page = await self.relations.relations(
            user_id, roomId, eventId, rel_type=relType, event_type=eventType, from_pos=from_pos,
            to_pos=to_pos, backwards=direction == "b", limit=limit, recurse=recurse)
        out: dict[str, Any] = {"chunk": await self.serializer.serialize(page.rows, user_id=user_id)}
        if page.next_pos is not None:
            out["next_batch"] = position_token(*page.next_pos)
        if from_token:
            out["prev_batch"] = from_token
        if recurse_given:
            out["recursion_depth"] = RECURSION_DEPTH if recurse else 1
        return 200, out

    async def get_threads(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        include = req.query("include", "all")
        if include not in ("all", "participated"):
            raise MatrixError(400, "M_INVALID_PARAM", "include must be 'all' or 'participated'")
        limit = req.query_int("limit", DEFAULT_LIMIT, lo=1) or DEFAULT_LIMIT
        limit = min(MAX_LIMIT, limit)
        from_token = req.query("from")
        from_pos = parse_token(from_token) if from_token else None
        user_id = req.requester.user_id
        page = await self.relations.threads(user_id, roomId, participated_only=include == "participated",
                                            from_pos=from_pos, limit=limit)
        roots = await self.serializer.serialize(page.roots, user_id=user_id)
        # A thread is listed only if the reader can see some of it beyond the root.
        chunk = [e for e in roots if THREAD in e["unsigned"].get("m.relations", {})]
        if include == "participated":
            chunk = [e for e in chunk
                     if e["unsigned"]["m.relations"][THREAD]["current_user_participated"]]
        out: dict[str, Any] = {"chunk": chunk}
        if page.next_pos is not None:
            out["next_batch"] = position_token(*page.next_pos)
        return 200, out
