"""Synapse-compatible admin endpoints for accounts: shared-secret registration and whois."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from homeserver.accounts.client_ips import ClientIpTracker
from homeserver.accounts.registration import RegistrationService
from homeserver.accounts.sessions import SessionService
from homeserver.clock import Clock
from homeserver.config import Config
from homeserver.http.errors import MatrixError
from homeserver.http.router import AUTH_NONE, Router
from homeserver.http.site import HttpRequest
from homeserver.identifiers import check_user_id
from storage.accounts import AccountStore
from storage.client_ips import ClientIpStore

NONCE_LIFETIME_MS = 60_000


def registration_mac(secret: str, nonce: str, username: str, password: str, admin: bool,
                     user_type: str | None = None) -> str:
    """HMAC-SHA1 over nonce, username, password and admin flag, NUL-separated (Synapse's scheme)."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf-8") + b"\x00" + username.encode("utf-8") + b"\x00"
               + password.encode("utf-8") + b"\x00" + (b"admin" if admin else b"notadmin"))
    if user_type:
        mac.update(b"\x00" + user_type.encode("utf-8"))
    return mac.hexdigest()


def require_admin(req: HttpRequest) -> None:
    if req.requester is None or not req.requester.is_admin:
        raise MatrixError(403, "M_FORBIDDEN", "You are not a server admin")


class AdminUsersApi:
    def __init__(self, config: Config, registration: RegistrationService, sessions: SessionService,
                 store: AccountStore, ip_store: ClientIpStore, ips: ClientIpTracker,
                 clock: Clock) -> None:
        self.config = config
        self.registration = registration
        self.sessions = sessions
        self.store = store
        self.ip_store = ip_store
        self.ips = ips
        self.clock = clock
        self._nonces: dict[str, int] = {}

    def register(self, router: Router) -> None:
        router.add("GET", "/_synapse/admin/v1/register", self.get_nonce, auth=AUTH_NONE)
        router.add("POST", "/_synapse/admin/v1/register", self.post_register, auth=AUTH_NONE)
        router.add("GET", "/_synapse/admin/v1/whois/{userId}", self.whois)
        router.client("GET", "/admin/whois/{userId}", self.whois)

    def _secret(self) -> str:
        secret = self.config.registration_shared_secret
        if not secret:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        return secret

    async def get_nonce(self, req: HttpRequest) -> tuple[int, Any]:
        self._secret()
        now = self.clock.time_msec()
        for n, ts in list(self._nonces.items()):
            if ts + NONCE_LIFETIME_MS < now:
                del self._nonces[n]
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = now
        return 200, {"nonce": nonce}

    async def post_register(self, req: HttpRequest) -> tuple[int, Any]:
        secret = self._secret()
        body = req.json()
        nonce = body.str("nonce", required=True)
        username = body.str("username", required=True)
        password = body.str("password", required=True)
        admin = body.bool("admin", default=False)
        user_type = body.str("user_type")
        displayname = body.str("displayname")
        mac = body.str("mac", required=True)
        if user_type not in (None, "bot", "support"):
            raise MatrixError(400, "M_INVALID_PARAM", "user_type must be 'bot' or 'support'")
        if "\x00" in username or "\x00" in password:
            raise MatrixError(400, "M_INVALID_PARAM", "username and password must not contain NUL")
        issued = self._nonces.pop(nonce, None)
        if issued is None or issued + NONCE_LIFETIME_MS < self.clock.time_msec():
            raise MatrixError(400, "M_UNKNOWN", "unrecognised nonce")
        want = registration_mac(secret, nonce, username, password, admin, user_type)
        if not hmac.compare_digest(want, mac.lower()):
            raise MatrixError(403, "M_FORBIDDEN", "HMAC incorrect")
        user_id = await self.registration.register(username.lower(), password, admin=admin,
                                                   displayname=displayname, user_type=user_type)
        result = await self.sessions.create_session(user_id, None, None, refreshable=False,
                                                    seen_from=(req.ip, req.user_agent))
        return 200, {"user_id": user_id, "access_token": result.access_token,
                     "device_id": result.device_id, "home_server": self.config.server_name}

    async def whois(self, req: HttpRequest, userId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_user_id(userId)
        if req.requester.user_id != userId:
            require_admin(req)
        await self.ips.flush()
        rows = await self.ip_store.get_for_user(userId)
        sessions: dict[str, list[dict[str, Any]]] = {}
        for device_id, ip, ua, ts in rows:
            sessions.setdefault(device_id, []).append(
                {"ip": ip, "last_seen": ts, "user_agent": ua})
        return 200, {"user_id": userId, "devices": {
            device_id: {"sessions": [{"connections": conns}]} for device_id, conns in sessions.items()}}
