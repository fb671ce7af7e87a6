"""/user/{userId}/account_data and /user/{userId}/rooms/{roomId}/account_data: a user's own
config, global or per room, delivered to their clients by /sync."""

from __future__ import annotations

from typing import Any

from homeserver.api.client.rooms import check_room_id, check_type_and_key
from homeserver.http.errors import MatrixError, forbidden, not_found
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.notifier import Notifier
from storage.account_data import AccountDataStore

# Types the server manages through their own APIs (read markers, push rules): the spec's
# "Server behaviour" for account data has clients' writes of them rejected, global or per room.
SERVER_MANAGED_TYPES = frozenset({"m.fully_read", "m.push_rules"})


class AccountDataApi:
    def __init__(self, store: AccountDataStore, notifier: Notifier) -> None:
        self.store = store
        self.notifier = notifier

    def register(self, router: Router) -> None:
        router.client("PUT", "/user/{userId}/account_data/{dataType}", self.put_global)
        router.client("GET", "/user/{userId}/account_data/{dataType}", self.get_global)
        router.client("PUT", "/user/{userId}/rooms/{roomId}/account_data/{dataType}", self.put_room)
        router.client("GET", "/user/{userId}/rooms/{roomId}/account_data/{dataType}", self.get_room)

    @staticmethod
    def _own(req: HttpRequest, user_id: str, data_type: str) -> None:
        assert req.requester is not None
        if req.requester.user_id != user_id:
            raise forbidden("Cannot access account data of other users")
        check_type_and_key(data_type)  # types are event types: at most 255 bytes

    @staticmethod
    def _content(req: HttpRequest, data_type: str) -> dict[str, Any]:
        if data_type in SERVER_MANAGED_TYPES:
            raise MatrixError(405, "M_BAD_JSON", f"Cannot set {data_type} through this API")
        return req.json().data

    async def put_global(self, req: HttpRequest, userId: str, dataType: str) -> tuple[int, Any]:
        self._own(req, userId, dataType)
        content = self._content(req, dataType)
        pos = await self.store.set_global(userId, dataType, content)
        self.notifier.notify("account_data", pos, users=[userId])
        return 200, {}

    async def get_global(self, req: HttpRequest, userId: str, dataType: str) -> tuple[int, Any]:
        self._own(req, userId, dataType)
        content = await self.store.get_global(userId, dataType)
        if content is None:
            raise not_found("Account data not found")
        return 200, content

    async def put_room(self, req: HttpRequest, userId: str, roomId: str, dataType: str) -> tuple[int, Any]:
        self._own(req, userId, dataType)
        check_room_id(roomId)
        content = self._content(req, dataType)
        pos = await self.store.set_room(userId, roomId, dataType, content)
        self.notifier.notify("account_data", pos, users=[userId])
        return 200, {}

    async def get_room(self, req: HttpRequest, userId: str, roomId: str, dataType: str) -> tuple[int, Any]:
        self._own(req, userId, dataType)
        check_room_id(roomId)
        content = await self.store.get_room(userId, roomId, dataType)
        if content is None:
            raise not_found("Room account data not found")
        return 200, content
