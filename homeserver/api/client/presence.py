"""GET and PUT /presence/{userId}/status."""

from __future__ import annotations

from typing import Any

from homeserver.ephemeral.presence import STATES, PresenceService
from homeserver.http.errors import MatrixError
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.identifiers import check_user_id

MAX_STATUS_MSG = 1024


class PresenceApi:
    def __init__(self, presence: PresenceService) -> None:
        self.presence = presence

    def register(self, router: Router) -> None:
        router.client("GET", "/presence/{userId}/status", self.get_status)
        router.client("PUT", "/presence/{userId}/status", self.put_status)

    async def get_status(self, req: HttpRequest, userId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_user_id(userId)
        return 200, await self.presence.get_presence(req.requester.user_id, userId)

    async def put_status(self, req: HttpRequest, userId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_user_id(userId)
        if userId != req.requester.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "You may only set your own presence")
        body = req.json()
        state = body.str("presence", required=True)
        if state not in STATES:
            raise MatrixError(400, "M_INVALID_PARAM", f"'presence' must be one of {', '.join(STATES)}")
        status_msg = body.str("status_msg", max_length=MAX_STATUS_MSG)
        await self.presence.set_status(userId, state, status_msg)
        return 200, {}
