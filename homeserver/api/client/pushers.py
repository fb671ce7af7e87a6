"""GET /pushers and POST /pushers/set: where the user's notifications are pushed."""

from __future__ import annotations

from typing import Any

from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.push.pushers import PusherService


class PushersApi:
    def __init__(self, pushers: PusherService) -> None:
        self.pushers = pushers

    def register(self, router: Router) -> None:
        router.client("GET", "/pushers", self.get_pushers)
        router.client("POST", "/pushers/set", self.set_pusher)

    async def get_pushers(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        return 200, {"pushers": await self.pushers.get_pushers(req.requester.user_id)}

    async def set_pusher(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        body = req.json()
        await self.pushers.set_pusher(req.requester.user_id, req.requester.device_id, body.data)
        return 200, {}
