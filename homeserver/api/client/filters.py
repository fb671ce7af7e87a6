"""/user/{userId}/filter: upload and download the filters /sync and friends accept by id."""

from __future__ import annotations

from typing import Any

from homeserver.http.errors import forbidden, not_found
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.sync.filters import FilterService
from storage.database import Database
from storage.filters import FilterStore


class FiltersApi:
    def __init__(self, filters: FilterService) -> None:
        self.filters = filters

    @classmethod
    def from_database(cls, db: Database) -> "FiltersApi":
        """Wiring in one line; /sync should share ``.filters`` (its ``resolve`` loads filters)."""
        return cls(FilterService(FilterStore(db)))

    def register(self, router: Router) -> None:
        # Guests may /sync, so they may define the filters for it too.
        router.client("POST", "/user/{userId}/filter", self.create_filter, allow_guest=True)
        router.client("GET", "/user/{userId}/filter/{filterId}", self.get_filter, allow_guest=True)

    async def create_filter(self, req: HttpRequest, userId: str) -> tuple[int, Any]:
        assert req.requester is not None
        if req.requester.user_id != userId:
            raise forbidden("You may only create filters for yourself")
        filter_id = await self.filters.create(userId, req.json_value())
        return 200, {"filter_id": filter_id}

    async def get_filter(self, req: HttpRequest, userId: str, filterId: str) -> tuple[int, Any]:
        assert req.requester is not None
        # Another user's filters are as unknown to the caller as ids never handed out.
        definition = None
        if req.requester.user_id == userId:
            definition = await self.filters.get_json(userId, filterId)
        if definition is None:
            raise not_found("Unknown filter")
        return 200, definition
