"""/user/{userId}/rooms/{roomId}/tags: a user's labels for rooms (favourites, low priority...)."""

from __future__ import annotations

from typing import Any

from homeserver.api.client.rooms import check_room_id
from homeserver.http.errors import MatrixError
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.notifier import Notifier
from storage.tags import TagStore

MAX_TAG_BYTES = 255


class TagsApi:
    def __init__(self, tags: TagStore, notifier: Notifier) -> None:
        self.tags = tags
        self.notifier = notifier

    def register(self, router: Router) -> None:
        router.client("GET", "/user/{userId}/rooms/{roomId}/tags", self.get_tags)
        router.client("PUT", "/user/{userId}/rooms/{roomId}/tags/{tag}", self.put_tag)
        router.client("DELETE", "/user/{userId}/rooms/{roomId}/tags/{tag}", self.delete_tag)

    @staticmethod
    def _own(req: HttpRequest, user_id: str, room_id: str) -> None:
        assert req.requester is not None
        if req.requester.user_id != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "You may only access your own tags")
        check_room_id(room_id)

    async def get_tags(self, req: HttpRequest, userId: str, roomId: str) -> tuple[int, Any]:
        self._own(req, userId, roomId)
        return 200, {"tags": await self.tags.get_tags(userId, roomId)}

    async def put_tag(self, req: HttpRequest, userId: str, roomId: str, tag: str) -> tuple[int, Any]:
        self._own(req, userId, roomId)
        if not tag or len(tag.encode("utf-8")) > MAX_TAG_BYTES:
            raise MatrixError(400, "M_INVALID_PARAM", f"Tag must be 1 to {MAX_TAG_BYTES} bytes")
        body = req.json(allow_empty=True).data
        order = body.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, (int, float))):
            raise MatrixError(400, "M_INVALID_PARAM", "'order' must be a number")
        pos = await self.tags.set_tag(userId, roomId, tag, body)
        # Tags reach /sync as the m.tag room account data.
        self.notifier.notify("account_data", pos, users=[userId])
        return 200, {}

    async def delete_tag(self, req: HttpRequest, userId: str, roomId: str, tag: str) -> tuple[int, Any]:
        self._own(req, userId, roomId)
        pos = await self.tags.delete_tag(userId, roomId, tag)
        if pos is not None:
            self.notifier.notify("account_data", pos, users=[userId])
        return 200, {}
