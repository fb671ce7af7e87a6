"""Reporting events, rooms and users to the server's admins."""

from __future__ import annotations

from typing import Any

from homeserver.api.client.rooms import check_room_id
from homeserver.clock import Clock
from homeserver.http.errors import MatrixError
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.identifiers import check_user_id
from homeserver.rooms.visibility import Visibility
from storage.accounts import AccountStore
from storage.events import EventStore
from storage.reports import ReportStore

MAX_REASON = 1000


class ReportingApi:
    def __init__(self, reports: ReportStore, store: EventStore, accounts: AccountStore,
                 visibility: Visibility, clock: Clock) -> None:
        self.reports = reports
        self.store = store
        self.accounts = accounts
        self.visibility = visibility
        self.clock = clock

    def register(self, router: Router) -> None:
        router.client("POST", "/rooms/{roomId}/report/{eventId}", self.report_event)
        router.client("POST", "/rooms/{roomId}/report", self.report_room)
        router.client("POST", "/users/{userId}/report", self.report_user)

    async def report_event(self, req: HttpRequest, roomId: str, eventId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        body = req.json(allow_empty=True)
        reason = body.str("reason", max_length=MAX_REASON)
        row = await self.store.get_event_row(eventId)
        if row is None or row.event.room_id != roomId \
                or not await self.visibility.can_see(req.requester.user_id, row):
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        await self.reports.report_event(roomId, eventId, req.requester.user_id, reason,
                                        self.clock.time_msec())
        return 200, {}

    async def report_room(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        reason = req.json().str("reason", required=True, max_length=MAX_REASON)
        if await self.store.get_room_version(roomId) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Room not found")
        await self.reports.report_event(roomId, None, req.requester.user_id, reason,
                                        self.clock.time_msec())
        return 200, {}

    async def report_user(self, req: HttpRequest, userId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_user_id(userId)
        reason = req.json().str("reason", required=True, max_length=MAX_REASON)
        user = await self.accounts.get_user(userId)
        if user is None:
            raise MatrixError(404, "M_NOT_FOUND", "User not found")
        await self.reports.report_user(userId, req.requester.user_id, reason, self.clock.time_msec())
        return 200, {}
