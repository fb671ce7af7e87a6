"""/login, /logout, /logout/all and /refresh."""

from __future__ import annotations

from typing import Any

from homeserver.accounts.secrets import check_password
from homeserver.accounts.sessions import SessionService
from homeserver.accounts.uia import parse_user_identifier
from homeserver.config import Config
from homeserver.http.errors import MatrixError
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.router import AUTH_NONE, Router
from homeserver.http.site import HttpRequest
from storage.accounts import AccountStore


class LoginApi:
    def __init__(self, config: Config, store: AccountStore, sessions: SessionService,
                 address_limiter: RateLimiter, account_limiter: RateLimiter,
                 failed_limiter: RateLimiter) -> None:
        self.config = config
        self.store = store
        self.sessions = sessions
        self.address_limiter = address_limiter
        self.account_limiter = account_limiter
        self.failed_limiter = failed_limiter

    def register(self, router: Router) -> None:
        router.client("GET", "/login", self.get_flows, auth=AUTH_NONE)
        router.client("POST", "/login", self.login, auth=AUTH_NONE)
        router.client("POST", "/logout", self.logout, allow_guest=True)
        router.client("POST", "/logout/all", self.logout_all, allow_guest=True)
        router.client("POST", "/refresh", self.refresh, auth=AUTH_NONE, versions=("v3", "v1"))

    async def get_flows(self, req: HttpRequest) -> tuple[int, Any]:
        flows = [{"type": "m.login.password"}] if self.config.password_enabled else []
        return 200, {"flows": flows}

    async def login(self, req: HttpRequest) -> tuple[int, Any]:
        body = req.json()
        login_type = body.str("type", required=True)
        if login_type != "m.login.password" or not self.config.password_enabled:
            raise MatrixError(400, "M_UNKNOWN", f"Unknown login type {login_type!r}")
        password = body.str("password", required=True)
        device_id = body.str("device_id")
        display_name = body.str("initial_device_display_name")
        refreshable = body.bool("refresh_token", default=False)
        self.sessions.check_device_id(device_id)
        self.sessions.check_display_name(display_name)
        user_id = parse_user_identifier(body.data, self.config.server_name)

        self.address_limiter.check(req.ip)
        key = user_id.lower()
        self.account_limiter.check(key)
        self.failed_limiter.check(key, update=False)
        user = await self._find_user(user_id)
        if user is None or not await check_password(password, user.password_hash):
            self.failed_limiter.record(key)
            raise MatrixError(403, "M_FORBIDDEN", "Invalid username or password")
        if user.deactivated:
            raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
        result = await self.sessions.create_session(user.user_id, device_id, display_name,
                                                    refreshable=refreshable,
                                                    seen_from=(req.ip, req.user_agent))
        out = result.to_json(self.config.server_name)
        out["well_known"] = {"m.homeserver": {"base_url": self.config.public_baseurl}}
        return 200, out

    async def _find_user(self, user_id: str):  # type: ignore[no-untyped-def]
        user = await self.store.get_user(user_id)
        if user is not None:
            return user
        # Ids are unique regardless of case, so a case-insensitive match is at most one user.
        matches = await self.store.get_user_case_insensitive(user_id)
        return matches[0] if len(matches) == 1 else None

    async def logout(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        await self.sessions.logout(req.requester.user_id, req.requester.device_id)
        return 200, {}

    async def logout_all(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        await self.sessions.logout_all(req.requester.user_id)
        return 200, {}

    async def refresh(self, req: HttpRequest) -> tuple[int, Any]:
        body = req.json()
        token = body.str("refresh_token", required=True)
        access, refresh, expires_in = await self.sessions.refresh(token)
        return 200, {"access_token": access, "refresh_token": refresh, "expires_in_ms": expires_in}
