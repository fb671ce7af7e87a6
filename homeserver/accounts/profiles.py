"""Profiles: display name, avatar URL and custom fields (spec v1.16 profile fields)."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from homeserver.http.errors import MatrixError
from storage.accounts import AccountStore
from storage.profiles import ProfileStore

MAX_PROFILE_BYTES = 64 * 1024
MAX_KEY_BYTES = 255
MAX_DISPLAYNAME_LENGTH = 256
MAX_AVATAR_URL_LENGTH = 1000


class ProfileService:
    def __init__(self, store: ProfileStore, accounts: AccountStore, server_name: str) -> None:
        self.store = store
        self.accounts = accounts
        self.server_name = server_name
        # Told (user_id, field, new value or None) after a displayname or avatar_url change, so
        # the rooms layer can send the new m.room.member events the spec asks for.
        self.listeners: list[Callable[[str, str, Any], Awaitable[None]]] = []

    async def _require_local_user(self, user_id: str) -> None:
        if not user_id.endswith(":" + self.server_name):
            raise MatrixError(404, "M_NOT_FOUND", "Profile not found (remote profiles need federation)")
        user = await self.accounts.get_user(user_id)
        if user is None or user.deactivated:
            raise MatrixError(404, "M_NOT_FOUND", "Profile not found")

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        await self._require_local_user(user_id)
        return await self.store.get_profile(user_id)

    async def get_field(self, user_id: str, field: str) -> Any:
        await self._require_local_user(user_id)
        value = await self.store.get_field(user_id, field)
        if value is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Profile field {field!r} is not set")
        return value

    @staticmethod
    def check_field(field: str, value: Any) -> None:
        if not field or len(field.encode("utf-8")) > MAX_KEY_BYTES:
            raise MatrixError(400, "M_KEY_TOO_LARGE", f"Profile key must be 1 to {MAX_KEY_BYTES} bytes")
        if field == "displayname":
            if value is not None and not isinstance(value, str):
                raise MatrixError(400, "M_INVALID_PARAM", "'displayname' must be a string")
            if isinstance(value, str) and len(value) > MAX_DISPLAYNAME_LENGTH:
                raise MatrixError(400, "M_INVALID_PARAM",
                                  f"'displayname' is longer than {MAX_DISPLAYNAME_LENGTH} characters")
        elif field == "avatar_url":
            if value is not None and not isinstance(value, str):
                raise MatrixError(400, "M_INVALID_PARAM", "'avatar_url' must be a string")
            if isinstance(value, str) and len(value) > MAX_AVATAR_URL_LENGTH:
                raise MatrixError(400, "M_INVALID_PARAM", "'avatar_url' is too long")

    async def set_field(self, requester_id: str, user_id: str, field: str, value: Any) -> None:
        """Set (or, with None, remove) a field of one's own profile."""
        if requester_id != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "You may only change your own profile")
        await self._require_local_user(user_id)
        self.check_field(field, value)
        if value is not None:
            profile = await self.store.get_profile(user_id)
            profile[field] = value
            size = len(json.dumps(profile, ensure_ascii=False).encode("utf-8"))
            if size > MAX_PROFILE_BYTES:
                raise MatrixError(400, "M_PROFILE_TOO_LARGE",
                                  f"Profile would be larger than {MAX_PROFILE_BYTES} bytes")
        # Set-to-empty for the two classic fields means "unset", as clients send it.
        if field in ("displayname", "avatar_url") and value == "":
            value = None
        await self.store.set_field(user_id, field, value)
        if field in ("displayname", "avatar_url"):
            for listener in self.listeners:
                await listener(user_id, field, value)
