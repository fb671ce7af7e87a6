"""PUT /rooms/{roomId}/typing/{userId}: start or stop typing in a room."""

from __future__ import annotations

from typing import Any

from homeserver.api.client.rooms import check_room_id
from homeserver.ephemeral.typing import DEFAULT_TIMEOUT_MS, TypingService
from homeserver.http.errors import MatrixError
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.identifiers import check_user_id


class TypingApi:
    def __init__(self, typing: TypingService) -> None:
        self.typing = typing

    def register(self, router: Router) -> None:
        router.client("PUT", "/rooms/{roomId}/typing/{userId}", self.put_typing)

    async def put_typing(self, req: HttpRequest, roomId: str, userId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        check_user_id(userId)
        if userId != req.requester.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "You may only set your own typing state")
        body = req.json()
        typing = body.bool("typing", required=True)
        timeout = body.int("timeout", default=DEFAULT_TIMEOUT_MS)
        if timeout < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "'timeout' must not be negative")
        await self.typing.set_typing(userId, roomId, typing, timeout)
        return 200, {}
