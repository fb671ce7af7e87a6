"""GET /sync."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from homeserver.http.errors import MatrixError
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.sync.handler import SyncHandler
from homeserver.sync.tokens import SyncToken

MAX_TIMEOUT_MS = 5 * 60 * 1000

# (user_id, filter query parameter) -> parsed filter; supplied by the filters module.
FilterLoader = Callable[[str, str | None], Awaitable[Any]]


async def _no_filter(user_id: str, value: str | None) -> Any:
    return None


class SyncApi:
    def __init__(self, handler: SyncHandler, load_filter: FilterLoader = _no_filter,
                 set_presence: Callable[[str, str], Awaitable[None]] | None = None) -> None:
        self.handler = handler
        self.load_filter = load_filter
        self.set_presence = set_presence

    def register(self, router: Router) -> None:
        router.client("GET", "/sync", self.sync, allow_guest=True)

    async def sync(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        since_text = req.query("since")
        since = SyncToken.parse(since_text) if since_text else None
        timeout = req.query_int("timeout", 0, lo=0) or 0
        full_state = req.query_bool("full_state", False)
        presence = req.query("set_presence", "online")
        if presence not in ("online", "offline", "unavailable"):
            raise MatrixError(400, "M_INVALID_PARAM", "set_presence must be online, offline or unavailable")
        flt = await self.load_filter(req.requester.user_id, req.query("filter"))
        if self.set_presence is not None:
            await self.set_presence(req.requester.user_id, presence)
        response = await self.handler.sync(req.requester.user_id, req.requester.device_id, since,
                                           min(timeout, MAX_TIMEOUT_MS), full_state, flt)
        return 200, response
