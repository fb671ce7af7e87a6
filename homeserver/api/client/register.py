"""/register, /register/available and registration-token validity."""

from __future__ import annotations

import secrets
from typing import Any

from homeserver.accounts.registration import RegistrationService
from homeserver.accounts.sessions import SessionService
from homeserver.accounts.uia import DUMMY, REGISTRATION_TOKEN, UserInteractiveAuth
from homeserver.config import Config
from homeserver.http.errors import MatrixError
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.router import AUTH_NONE, Router
from homeserver.http.site import HttpRequest
from homeserver.http.jsonbody import JsonObject
from storage.registration_tokens import RegistrationTokenStore

MAX_PASSWORD_LENGTH = 512


class RegisterApi:
    def __init__(self, config: Config, registration: RegistrationService, sessions: SessionService,
                 uia: UserInteractiveAuth, tokens: RegistrationTokenStore,
                 limiter: RateLimiter) -> None:
        self.config = config
        self.registration = registration
        self.sessions = sessions
        self.uia = uia
        self.tokens = tokens
        self.limiter = limiter

    def register(self, router: Router) -> None:
        router.client("POST", "/register", self.post_register, auth=AUTH_NONE)
        router.client("GET", "/register/available", self.available, auth=AUTH_NONE)
        router.add("GET", "/_matrix/client/v1/register/m.login.registration_token/validity",
                   self.token_validity, auth=AUTH_NONE)

    @property
    def flows(self) -> list[list[str]]:
        if self.config.registration_requires_token:
            return [[REGISTRATION_TOKEN]]
        return [[DUMMY]]

    def _check_enabled(self) -> None:
        if not self.config.enable_registration:
            raise MatrixError(403, "M_FORBIDDEN", "Registration has been disabled")

    async def available(self, req: HttpRequest) -> tuple[int, Any]:
        self._check_enabled()
        username = req.query("username", required=True)
        await self.registration.check_available(username or "")
        return 200, {"available": True}

    async def token_validity(self, req: HttpRequest) -> tuple[int, Any]:
        self._check_enabled()
        token = req.query("token", required=True)
        self.limiter.check(req.ip)
        valid = await self.tokens.is_valid(token or "", self.registration.clock.time_msec())
        return 200, {"valid": valid}

    async def post_register(self, req: HttpRequest) -> tuple[int, Any]:
        kind = req.query("kind", "user")
        body = req.json()
        if kind == "guest":
            return await self._register_guest(req, body)
        if kind != "user":
            raise MatrixError(400, "M_INVALID_PARAM", "kind must be 'user' or 'guest'")
        self._check_enabled()
        # Check the plain fields before any UIA round trip, so clients learn early.
        username = body.str("username")
        if username is not None:
            username = username.lower()
        password = body.str("password", max_length=MAX_PASSWORD_LENGTH)
        self.sessions.check_device_id(body.str("device_id"))
        self.sessions.check_display_name(body.str("initial_device_display_name"))
        body.bool("inhibit_login")
        body.bool("refresh_token")
        if username is not None:
            await self.registration.check_available(username)
        if password is not None:
            self.registration.check_password_policy(password)

        merged, session = await self.uia.check("register", self.flows, body)
        params = JsonObject(merged)
        username = params.str("username")
        username = username.lower() if username is not None else await self._generate_localpart()
        password = params.str("password", max_length=MAX_PASSWORD_LENGTH)
        if password is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: password")
        self.limiter.check(req.ip)
        user_id = await self.registration.register(username, password)
        token = session.params.get("_registration_token")
        if token:
            await self.tokens.complete(token)
        await self.uia.finish(session)
        if params.bool("inhibit_login", default=False):
            return 200, {"user_id": user_id, "home_server": self.config.server_name}
        result = await self.sessions.create_session(
            user_id, params.str("device_id"), params.str("initial_device_display_name"),
            refreshable=params.bool("refresh_token", default=False),
            seen_from=(req.ip, req.user_agent))
        return 200, result.to_json(self.config.server_name)

    async def _generate_localpart(self) -> str:
        for _ in range(10):
            candidate = "u" + secrets.token_hex(6)
            if not await self.registration.store.user_id_taken(
                    self.registration.user_id_for(candidate)):
                return candidate
        raise MatrixError(500, "M_UNKNOWN", "Could not generate a user id")

    async def _register_guest(self, req: HttpRequest, body: JsonObject) -> tuple[int, Any]:
        if not self.config.allow_guest_access:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled")
        self.sessions.check_display_name(body.str("initial_device_display_name"))
        body.bool("refresh_token")
        self.limiter.check(req.ip)
        user_id = await self.registration.register_guest()
        result = await self.sessions.create_session(
            user_id, None, body.str("initial_device_display_name"),
            refreshable=body.bool("refresh_token", default=False), seen_from=(req.ip, req.user_agent))
        return 200, result.to_json(self.config.server_name)
