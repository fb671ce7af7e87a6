"""POST /user_directory/search (spec "User directory")."""

from __future__ import annotations

from typing import Any

from homeserver.http.errors import invalid_param
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.search.user_directory import DEFAULT_LIMIT, MAX_LIMIT, UserDirectory

MAX_SEARCH_TERM = 1000


class UserDirectoryApi:
    def __init__(self, directory: UserDirectory) -> None:
        self.directory = directory

    def register(self, router: Router) -> None:
        router.client("POST", "/user_directory/search", self.search)

    async def search(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        body = req.json()
        term = body.str("search_term", required=True, max_length=MAX_SEARCH_TERM)
        limit = body.int("limit", default=DEFAULT_LIMIT)
        if limit < 0:
            raise invalid_param("'limit' must not be negative")
        found = await self.directory.search(req.requester.user_id, term, min(limit, MAX_LIMIT))
        results = []
        for entry in found.results:
            item: dict[str, Any] = {"user_id": entry.user_id}
            if entry.display_name is not None:
                item["display_name"] = entry.display_name
            if entry.avatar_url is not None and entry.avatar_url.startswith("mxc://"):
                item["avatar_url"] = entry.avatar_url
            results.append(item)
        return 200, {"results": results, "limited": found.limited}
