"""POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync (MSC4186).

``pos``, ``timeout`` and ``set_presence`` are read from the query string (as Synapse and the
clients built against it send them) or, failing that, from the body (the MSC's current text).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from homeserver.http.errors import invalid_param
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.sync.sliding import SlidingSyncHandler
from homeserver.sync.sliding_request import parse_request

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
MAX_TIMEOUT_MS = 5 * 60 * 1000
_PRESENCE = ("online", "offline", "unavailable")


class SlidingSyncApi:
    def __init__(self, handler: SlidingSyncHandler,
                 set_presence: Callable[[str, str], Awaitable[None]] | None = None) -> None:
        self.handler = handler
        self.set_presence = set_presence

    def register(self, router: Router) -> None:
        router.add("POST", PATH, self.sync, allow_guest=True)

    async def sync(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        request = parse_request(req.json(allow_empty=True).data)
        pos = req.query("pos")
        if pos is None:
            pos = request.pos
        timeout = req.query_int("timeout", None, lo=0)
        if timeout is None:
            timeout = request.timeout_ms or 0
        presence = req.query("set_presence") or request.set_presence or "online"
        if presence not in _PRESENCE:
            raise invalid_param("set_presence must be online, offline or unavailable")
        if self.set_presence is not None:
            await self.set_presence(req.requester.user_id, presence)
        response = await self.handler.sync(req.requester.user_id, req.requester.device_id, request,
                                           pos or None, min(timeout, MAX_TIMEOUT_MS))
        if request.txn_id is not None:
            response["txn_id"] = request.txn_id
        return 200, response
