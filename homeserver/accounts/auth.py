"""Who is calling: access tokens from the Authorization header, resolved to a Requester."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from homeserver.accounts.client_ips import ClientIpTracker
from homeserver.accounts.secrets import token_digest
from homeserver.clock import Clock
from homeserver.http.errors import MatrixError
from storage.accounts import AccountStore

if TYPE_CHECKING:
    from homeserver.http.site import HttpRequest


@dataclass(frozen=True)
class Requester:
    user_id: str
    device_id: str
    token_hash: str
    is_guest: bool
    is_admin: bool


def missing_token() -> MatrixError:
    return MatrixError(401, "M_MISSING_TOKEN", "Missing access token")


def unknown_token(soft_logout: bool = False) -> MatrixError:
    return MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised access token",
                       soft_logout=soft_logout)


class Authenticator:
    """Turns a bearer token into a Requester; also notes the session's IP and user agent."""

    def __init__(self, store: AccountStore, clock: Clock, ips: ClientIpTracker) -> None:
        self.store = store
        self.clock = clock
        self.ips = ips

    @staticmethod
    def token_from_request(req: "HttpRequest") -> str | None:
        # Only the Authorization header: the spec removed access tokens in the query string.
        header = req.raw.getHeader(b"Authorization")
        if header is None:
            return None
        parts = header.split(None, 1)
        if len(parts) != 2 or parts[0].lower() != b"bearer":
            raise MatrixError(401, "M_MISSING_TOKEN",
                              "Authorization header must be 'Bearer <access token>'")
        try:
            return parts[1].strip().decode("ascii")
        except UnicodeDecodeError:
            raise unknown_token() from None

    async def authenticate(self, token: str | None, req: "HttpRequest", *,
                           allow_guest: bool = False) -> Requester:
        if token is None:
            raise missing_token()
        requester = await self.requester_for_token(token)
        if requester.is_guest and not allow_guest:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access not allowed")
        self.ips.record(requester.user_id, requester.device_id, req.ip, req.user_agent)
        return requester

    async def requester_for_token(self, token: str) -> Requester:
        digest = token_digest(token)
        rec = await self.store.get_access_token(digest)
        if rec is None or rec.deactivated:
            raise unknown_token()
        if rec.valid_until_ts is not None and rec.valid_until_ts <= self.clock.time_msec():
            raise unknown_token(soft_logout=True)
        if rec.refresh_token_hash is not None and not rec.used:
            # First use of a refreshed token: its predecessor refresh token is now spent.
            await self.store.consume_predecessor(rec.refresh_token_hash)
        return Requester(rec.user_id, rec.device_id, digest, rec.is_guest, rec.admin)
