"""/account/whoami, /account/password and /account/deactivate."""

from __future__ import annotations

from typing import Any

from homeserver.accounts.deactivation import DeactivationService
from homeserver.accounts.registration import RegistrationService
from homeserver.accounts.sessions import SessionService
from homeserver.accounts.uia import PASSWORD, UserInteractiveAuth
from homeserver.config import Config
from homeserver.http.errors import MatrixError
from homeserver.http.jsonbody import JsonObject
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest

MAX_PASSWORD_LENGTH = 512


class AccountApi:
    def __init__(self, config: Config, registration: RegistrationService, sessions: SessionService,
                 deactivation: DeactivationService, uia: UserInteractiveAuth) -> None:
        self.config = config
        self.registration = registration
        self.sessions = sessions
        self.deactivation = deactivation
        self.uia = uia

    def register(self, router: Router) -> None:
        router.client("GET", "/account/whoami", self.whoami, allow_guest=True)
        router.client("POST", "/account/password", self.password)
        router.client("POST", "/account/deactivate", self.deactivate)

    async def whoami(self, req: HttpRequest) -> tuple[int, Any]:
        r = req.requester
        assert r is not None
        return 200, {"user_id": r.user_id, "device_id": r.device_id, "is_guest": r.is_guest}

    async def password(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        if not self.config.password_enabled:
            raise MatrixError(403, "M_FORBIDDEN", "Password changes are disabled on this server")
        body = req.json()
        new_password = body.str("new_password", max_length=MAX_PASSWORD_LENGTH)
        body.bool("logout_devices")
        if new_password is not None:
            self.registration.check_password_policy(new_password)
        merged, session = await self.uia.check("password", [[PASSWORD]], body,
                                               user_id=req.requester.user_id)
        params = JsonObject(merged)
        new_password = params.str("new_password", required=True, max_length=MAX_PASSWORD_LENGTH)
        await self.registration.change_password(req.requester.user_id, new_password)
        await self.uia.finish(session)
        if params.bool("logout_devices", default=True):
            await self.sessions.logout_other_devices(req.requester.user_id, req.requester.device_id)
        return 200, {}

    async def deactivate(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        body = req.json(allow_empty=True)
        body.str("id_server")
        body.bool("erase")
        merged, session = await self.uia.check("deactivate", [[PASSWORD]], body,
                                               user_id=req.requester.user_id)
        params = JsonObject(merged)
        await self.deactivation.deactivate(req.requester.user_id,
                                           erase=params.bool("erase", default=False))
        await self.uia.finish(session)
        return 200, {"id_server_unbind_result": "no-support"}
