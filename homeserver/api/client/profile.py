"""/profile/{userId} and its fields (displayname, avatar_url, custom keys)."""

from __future__ import annotations

from typing import Any

from homeserver.accounts.profiles import ProfileService
from homeserver.http.errors import MatrixError
from homeserver.http.router import AUTH_OPTIONAL, Router
from homeserver.http.site import HttpRequest
from homeserver.identifiers import check_user_id


class ProfileApi:
    def __init__(self, profiles: ProfileService) -> None:
        self.profiles = profiles

    def register(self, router: Router) -> None:
        router.client("GET", "/profile/{userId}", self.get_profile, auth=AUTH_OPTIONAL,
                      allow_guest=True)
        router.client("GET", "/profile/{userId}/{keyName}", self.get_field, auth=AUTH_OPTIONAL,
                      allow_guest=True)
        router.client("PUT", "/profile/{userId}/{keyName}", self.put_field, allow_guest=True)
        router.client("DELETE", "/profile/{userId}/{keyName}", self.delete_field, allow_guest=True)

    async def get_profile(self, req: HttpRequest, userId: str) -> tuple[int, Any]:
        check_user_id(userId)
        return 200, await self.profiles.get_profile(userId)

    async def get_field(self, req: HttpRequest, userId: str, keyName: str) -> tuple[int, Any]:
        check_user_id(userId)
        return 200, {keyName: await self.profiles.get_field(userId, keyName)}

    async def put_field(self, req: HttpRequest, userId: str, keyName: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_user_id(userId)
        body = req.json()
        if keyName not in body.data:
            raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameter: {keyName}")
        if len(body.data) != 1:
            raise MatrixError(400, "M_BAD_JSON", f"Body must contain only the key {keyName!r}")
        await self.profiles.set_field(req.requester.user_id, userId, keyName, body.data[keyName])
        return 200, {}

    async def delete_field(self, req: HttpRequest, userId: str, keyName: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_user_id(userId)
        await self.profiles.set_field(req.requester.user_id, userId, keyName, None)
        return 200, {}
