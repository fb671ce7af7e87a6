"""Deactivating an account: sessions, devices, IP records and profile go; the id stays taken."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from homeserver.accounts.client_ips import ClientIpTracker
from homeserver.accounts.sessions import SessionService
from homeserver.clock import Clock
from storage.accounts import AccountStore
from storage.profiles import ProfileStore


class DeactivationService:
    def __init__(self, store: AccountStore, profiles: ProfileStore, sessions: SessionService,
                 ips: ClientIpTracker, clock: Clock, *,
                 erase_media: Callable[[str], Awaitable[Any]] | None = None) -> None:
        self.store = store
        self.profiles = profiles
        self.sessions = sessions
        self.ips = ips
        self.clock = clock
        self.erase_media = erase_media  # deletes a user's uploads (erase=true)

    async def deactivate(self, user_id: str, *, erase: bool = False) -> None:
        devices = [d.device_id for d in await self.store.get_devices(user_id)]
        # One transaction removes tokens, devices and IP records and marks the user: a
        # deactivated account can never log in, and its id can never be registered again.
        await self.store.deactivate_user(user_id, self.clock.time_msec(), erase=erase)
        self.ips.forget(user_id)
        await self.profiles.delete_profile(user_id)
        if erase and self.erase_media is not None:
            await self.erase_media(user_id)
        for listener in self.sessions.listeners:
            await listener.devices_deleted(user_id, devices)
