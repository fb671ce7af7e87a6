"""Logging in and out: devices, access and refresh tokens, and what a user can review and revoke."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.accounts.client_ips import ClientIpTracker
from homeserver.accounts.secrets import new_device_id, new_token, token_digest
from homeserver.clock import Clock
from homeserver.http.errors import MatrixError
from storage.accounts import AccountStore, DeviceRecord

MAX_DEVICE_ID_LENGTH = 255
MAX_DEVICE_NAME_LENGTH = 100


@dataclass(frozen=True)
class LoginResult:
    user_id: str
    device_id: str
    access_token: str
    refresh_token: str | None
    expires_in_ms: int | None

    def to_json(self, server_name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"user_id": self.user_id, "access_token": self.access_token,
                               "device_id": self.device_id, "home_server": server_name}
        if self.refresh_token is not None:
            out["refresh_token"] = self.refresh_token
        if self.expires_in_ms is not None:
            out["expires_in_ms"] = self.expires_in_ms
        return out


class DeviceListener(Protocol):
    """Told when devices of a user go away (E2EE keys and to-device queues hook in here)."""

    async def devices_deleted(self, user_id: str, device_ids: list[str]) -> None: ...


class SessionService:
    def __init__(self, store: AccountStore, clock: Clock, ips: ClientIpTracker,
                 access_lifetime_ms: int, refresh_lifetime_ms: int | None) -> None:
        self.store = store
        self.clock = clock
        self.ips = ips
        self.access_lifetime_ms = access_lifetime_ms
        self.refresh_lifetime_ms = refresh_lifetime_ms
        self.listeners: list[DeviceListener] = []

    @staticmethod
    def check_device_id(device_id: str | None) -> None:
        if device_id is not None and (not device_id or len(device_id) > MAX_DEVICE_ID_LENGTH
                                      or any(c.isspace() or not c.isprintable() for c in device_id)):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid device_id")

    @staticmethod
    def check_display_name(name: str | None) -> None:
        if name is not None and len(name) > MAX_DEVICE_NAME_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM",
                              f"Device display name is longer than {MAX_DEVICE_NAME_LENGTH} characters")

    async def create_session(self, user_id: str, device_id: str | None, display_name: str | None,
                             *, refreshable: bool, record_login: bool = True,
                             seen_from: tuple[str, str] | None = None) -> LoginResult:
        """Create (or reuse) a device and issue its tokens.

        ``seen_from`` is the (IP, user agent) of the login request: the device's first sighting.
        """
        self.check_device_id(device_id)
        self.check_display_name(display_name)
        now = self.clock.time_msec()
        device_id = device_id or new_device_id()
        await self.store.upsert_device(user_id, device_id, display_name, now)
        access = new_token("hat")
        refresh = None
        expires_in = None
        if refreshable:
            refresh = new_token("hrt")
            expires_in = self.access_lifetime_ms
            expiry = now + self.refresh_lifetime_ms if self.refresh_lifetime_ms else None
            await self.store.add_refresh_token(token_digest(refresh), user_id, device_id, now, expiry)
            await self.store.add_access_token(token_digest(access), user_id, device_id, now,
                                              now + expires_in, token_digest(refresh))
        else:
            await self.store.add_access_token(token_digest(access), user_id, device_id, now)
        if record_login:
            await self.store.set_last_login(user_id, now)
        if seen_from is not None:
            self.ips.record(user_id, device_id, *seen_from)
        return LoginResult(user_id, device_id, access, refresh, expires_in)

    async def refresh(self, refresh_token: str) -> tuple[str, str, int]:
        """Exchange a refresh token for (access_token, refresh_token, expires_in_ms)."""
        digest = token_digest(refresh_token)
        rec = await self.store.get_refresh_token(digest)
        now = self.clock.time_msec()
        if rec is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown refresh token", soft_logout=False)
        if rec.expiry_ts is not None and rec.expiry_ts <= now:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Refresh token has expired", soft_logout=False)
        user = await self.store.get_user(rec.user_id)
        if user is None or user.deactivated:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown refresh token", soft_logout=False)
        # Using this token proves its predecessor's replacement arrived.
        await self.store.consume_predecessor(digest)
        access, refresh = new_token("hat"), new_token("hrt")
        expiry = now + self.refresh_lifetime_ms if self.refresh_lifetime_ms else None
        await self.store.rotate_refresh_token(digest, token_digest(refresh), token_digest(access),
                                              rec.user_id, rec.device_id, now,
                                              now + self.access_lifetime_ms, expiry)
        return access, refresh, self.access_lifetime_ms

    async def list_devices(self, user_id: str) -> list[DeviceRecord]:
        """Devices with their freshest sighting, including ones not yet written to the database."""
        devices = await self.store.get_devices(user_id)
        pending = self.ips.pending_for(user_id)
        out = []
        for d in devices:
            seen = pending.get(d.device_id)
            if seen and (d.last_seen_ts is None or seen[2] >= d.last_seen_ts):
                d = DeviceRecord(d.user_id, d.device_id, d.display_name, d.created_ts, seen[2],
                                 seen[0], seen[1])
            out.append(d)
        return out

    async def get_device(self, user_id: str, device_id: str) -> DeviceRecord:
        for d in await self.list_devices(user_id):
            if d.device_id == device_id:
                return d
        raise MatrixError(404, "M_NOT_FOUND", "Device not found")

    async def rename_device(self, user_id: str, device_id: str, name: str | None) -> None:
        self.check_display_name(name)
        if not await self.store.set_device_display_name(user_id, device_id, name):
            raise MatrixError(404, "M_NOT_FOUND", "Device not found")

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Delete devices, their tokens and IP records; unknown ids are ignored, as the spec says."""
        if not device_ids:
            return
        await self.store.delete_devices(user_id, device_ids)
        for device_id in device_ids:
            self.ips.forget(user_id, device_id)
        for listener in self.listeners:
            await listener.devices_deleted(user_id, device_ids)

    async def logout(self, user_id: str, device_id: str) -> None:
        """Spec: logging out invalidates the token and deletes its device."""
        await self.delete_devices(user_id, [device_id])

    async def logout_all(self, user_id: str) -> None:
        devices = [d.device_id for d in await self.store.get_devices(user_id)]
        await self.store.delete_user_tokens(user_id)
        await self.delete_devices(user_id, devices)

    async def logout_other_devices(self, user_id: str, keep_device_id: str) -> None:
        devices = [d.device_id for d in await self.store.get_devices(user_id)
                   if d.device_id != keep_device_id]
        await self.store.delete_user_tokens(user_id, except_device_id=keep_device_id)
        await self.delete_devices(user_id, devices)
