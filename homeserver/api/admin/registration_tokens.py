"""/_synapse/admin/v1/registration_tokens: create, list, update and delete registration tokens."""

from __future__ import annotations

import secrets
import string
from typing import Any

from homeserver.api.admin.users import require_admin
from homeserver.clock import Clock
from homeserver.http.errors import MatrixError
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from storage.registration_tokens import RegistrationToken, RegistrationTokenStore

_TOKEN_CHARS = string.ascii_letters + string.digits + "._~-"
PREFIX = "/_synapse/admin/v1/registration_tokens"


def token_json(t: RegistrationToken) -> dict[str, Any]:
    return {"token": t.token, "uses_allowed": t.uses_allowed, "pending": t.pending,
            "completed": t.completed, "expiry_time": t.expiry_time}


class AdminRegistrationTokensApi:
    def __init__(self, store: RegistrationTokenStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def register(self, router: Router) -> None:
        router.add("GET", PREFIX, self.list_tokens)
        router.add("POST", PREFIX + "/new", self.create)
        router.add("GET", PREFIX + "/{token}", self.get)
        router.add("PUT", PREFIX + "/{token}", self.update)
        router.add("DELETE", PREFIX + "/{token}", self.delete)

    async def list_tokens(self, req: HttpRequest) -> tuple[int, Any]:
        require_admin(req)
        valid = req.query("valid")
        tokens = await self.store.list()
        if valid is not None:
            want = valid == "true"
            now = self.clock.time_msec()
            tokens = [t for t in tokens if self._is_valid(t, now) == want]
        return 200, {"registration_tokens": [token_json(t) for t in tokens]}

    @staticmethod
    def _is_valid(t: RegistrationToken, now: int) -> bool:
        return ((t.expiry_time is None or t.expiry_time > now)
                and (t.uses_allowed is None or t.pending + t.completed < t.uses_allowed))

    def _limits(self, body: Any) -> tuple[int | None, int | None]:
        uses = body.int("uses_allowed")
        expiry = body.int("expiry_time")
        if uses is not None and uses < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "uses_allowed must be a non-negative integer")
        if expiry is not None and expiry < self.clock.time_msec():
            raise MatrixError(400, "M_INVALID_PARAM", "expiry_time must not be in the past")
        return uses, expiry

    async def create(self, req: HttpRequest) -> tuple[int, Any]:
        require_admin(req)
        body = req.json(allow_empty=True)
        token = body.str("token")
        uses, expiry = self._limits(body)
        if token is not None:
            if not token or len(token) > 64 or any(c not in _TOKEN_CHARS for c in token):
                raise MatrixError(400, "M_INVALID_PARAM",
                                  "token must be 1-64 characters of [A-Za-z0-9._~-]")
            if not await self.store.create(token, uses, expiry):
                raise MatrixError(400, "M_INVALID_PARAM", f"Token already exists: {token}")
        else:
            length = body.int("length", default=16)
            if not 0 < length <= 64:
                raise MatrixError(400, "M_INVALID_PARAM", "length must be between 1 and 64")
            while True:
                token = "".join(secrets.choice(_TOKEN_CHARS) for _ in range(length))
                if await self.store.create(token, uses, expiry):
                    break
        rec = await self.store.get(token)
        assert rec is not None
        return 200, token_json(rec)

    async def get(self, req: HttpRequest, token: str) -> tuple[int, Any]:
        require_admin(req)
        rec = await self.store.get(token)
        if rec is None:
            raise MatrixError(404, "M_NOT_FOUND", f"No such registration token: {token}")
        return 200, token_json(rec)

    async def update(self, req: HttpRequest, token: str) -> tuple[int, Any]:
        require_admin(req)
        rec = await self.store.get(token)
        if rec is None:
            raise MatrixError(404, "M_NOT_FOUND", f"No such registration token: {token}")
        body = req.json()
        uses, expiry = self._limits(body)
        await self.store.update(token, uses if "uses_allowed" in body else rec.uses_allowed,
                                expiry if "expiry_time" in body else rec.expiry_time)
        rec = await self.store.get(token)
        assert rec is not None
        return 200, token_json(rec)

    async def delete(self, req: HttpRequest, token: str) -> tuple[int, Any]:
        require_admin(req)
        if not await self.store.delete(token):
            raise MatrixError(404, "M_NOT_FOUND", f"No such registration token: {token}")
        return 200, {}
