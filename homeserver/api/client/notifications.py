"""GET /notifications: the events the user was notified about, newest first, paginated."""

from __future__ import annotations

from typing import Any

from homeserver.api.client.membership import MEMBERSHIPS
from homeserver.http.errors import invalid_param
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.rooms.serialize import ClientSerializer
from storage.events import EventStore
from storage.notifications import NotificationStore

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


class NotificationsApi:
    def __init__(self, store: NotificationStore, events: EventStore,
                 serializer: ClientSerializer) -> None:
        self.store = store
        self.events = events
        self.serializer = serializer

    def register(self, router: Router) -> None:
        router.client("GET", "/notifications", self.get_notifications)

    async def get_notifications(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        user_id = req.requester.user_id
        token = req.query("from")
        before = None
        if token is not None and token != "":
            if not token.isascii() or not token.isdigit() or len(token) > 18:
                raise invalid_param("'from' is not a token this server gave out")
            before = int(token)
        limit = req.query_int("limit", DEFAULT_LIMIT, lo=0)
        assert limit is not None
        limit = min(limit, MAX_LIMIT)
        only_highlight = req.query("only") == "highlight"
        if limit == 0:
            return 200, {"notifications": []}
        # Every room the user was ever in: notifications outlive leaving (they are read then).
        rooms = await self.events.get_rooms_for_user(user_id, MEMBERSHIPS)
        found = await self.store.list(user_id, rooms, before, limit + 1, only_highlight)
        more = len(found) > limit
        found = found[:limit]
        rows = await self.events.get_rows(n.event_id for n in found)
        present = [n for n in found if n.event_id in rows]
        events = await self.serializer.serialize([rows[n.event_id] for n in present],
                                                 include_room_id=False, user_id=user_id)
        out: dict[str, Any] = {"notifications": [
            {"actions": n.actions, "event": ev, "read": not n.unread, "room_id": n.room_id,
             "ts": n.ts} for n, ev in zip(present, events)]}
        if more and found:
            out["next_token"] = str(found[-1].stream_ordering)
        return 200, out
