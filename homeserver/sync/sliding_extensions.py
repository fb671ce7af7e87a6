"""Extensions of simplified sliding sync: account data (MSC3959), receipts (MSC3960), typing
(MSC3961), to-device messages (MSC3885) and E2EE device data (MSC3884).

Account data, receipts and typing cover the rooms of the lists and subscriptions the extension
names (``lists``/``rooms``, ``"*"`` for all, the default), among those in the response's
windows. Receipts and account data keep per-connection state like room data: a room coming into
a window gets everything it has not been sent (for receipts, as on an initial /sync: those of
the events in its timeline plus the user's own), other rooms what changed since.
Receipts and typing are only for rooms the user is joined to.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable, Mapping, Protocol

from homeserver.ephemeral.receipts import ReceiptService
from homeserver.ephemeral.typing import TypingService
from homeserver.sync.sliding_connections import ConnectionState
from homeserver.sync.sliding_request import WILDCARD, ExtensionScope, Extensions, ToDeviceConfig
from homeserver.sync.sliding_room import RoomResult
from homeserver.sync.sliding_rooms import InterestedRooms
from homeserver.sync.tokens import SyncToken
from storage.account_data import AccountDataStore


class ToDeviceSource(Protocol):
    """What the to_device extension needs (homeserver/e2ee/to_device.py's ToDeviceService)."""

    async def messages_for_device(self, user_id: str, device_id: str, since_pos: int | None,
                                  upto_pos: int, limit: int = ...) -> tuple[list[dict[str, Any]], int]: ...

    async def delete_acknowledged(self, user_id: str, device_id: str, upto_pos: int) -> None: ...


class DeviceListSource(Protocol):
    """Device-list changes for the e2ee extension (homeserver/e2ee/device_lists.py)."""

    async def device_list_changes(self, user_id: str, from_pos: int | None, to_pos: int
                                  ) -> tuple[set[str], set[str]]: ...


class KeyCountSource(Protocol):
    """One-time and fallback key state for the e2ee extension (homeserver/e2ee/keys.py)."""

    async def one_time_key_counts(self, user_id: str, device_id: str) -> Mapping[str, int]: ...

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> Iterable[str]: ...


class SlidingExtensions:
    def __init__(self, account_data: AccountDataStore, typing: TypingService | None,
                 receipts: ReceiptService | None, to_device: ToDeviceSource | None = None,
                 device_lists: DeviceListSource | None = None,
                 keys: KeyCountSource | None = None) -> None:
        self.account_data = account_data
        self.typing = typing
        self.receipts = receipts
        self.to_device = to_device
        self.device_lists = device_lists
        self.keys = keys

    async def compute(self, user_id: str, device_id: str, cfg: Extensions, since: SyncToken | None,
                      now: SyncToken, rooms: InterestedRooms, results: Mapping[str, RoomResult],
                      prev: ConnectionState, new: ConnectionState) -> dict[str, Any]:
        """The response's ``extensions``: only the enabled ones, each only when it has news
        (to_device and e2ee always, as their clients expect)."""
        out: dict[str, Any] = {}
        joined = {r for r, m in rooms.memberships.items() if m.membership == "join"}
        if cfg.to_device.enabled and self.to_device is not None:
            out["to_device"] = await self._to_device(user_id, device_id, cfg.to_device, now)
        if cfg.e2ee and (self.keys is not None or self.device_lists is not None):
            out["e2ee"] = await self._e2ee(user_id, device_id, since, now)
        if cfg.account_data.enabled:
            ad = await self._account_data(user_id, _scoped(cfg.account_data, rooms), since, now,
                                          prev, new)
            if ad["global"] or ad["rooms"]:
                out["account_data"] = ad
        if cfg.receipts.enabled and self.receipts is not None:
            got = await self._receipts(user_id, _scoped(cfg.receipts, rooms) & joined, since, now,
                                       results, prev, new)
            if got:
                out["receipts"] = {"rooms": got}
        if cfg.typing.enabled and self.typing is not None:
            scoped = _scoped(cfg.typing, rooms) & joined
            fresh = {r for r in scoped if since is None or (r in results and results[r].initial)}
            got = self.typing.events_for_rooms(fresh, None)
            if since is not None:
                got.update(self.typing.events_for_rooms(scoped - fresh, since.typing))
            if got:
                out["typing"] = {"rooms": got}
        return out

    @staticmethod
    def has_news(ext: Mapping[str, Any]) -> bool:
        """Whether the extensions alone make a response worth sending before the timeout."""
        if ext.get("to_device", {}).get("events"):
            return True
        lists = ext.get("e2ee", {}).get("device_lists", {})
        if lists.get("changed") or lists.get("left"):
            return True
        return any(k in ext for k in ("account_data", "receipts", "typing"))

    async def _to_device(self, user_id: str, device_id: str, cfg: ToDeviceConfig, now: SyncToken
                        ) -> dict[str, Any]:
        assert self.to_device is not None
        if cfg.since is not None:
            # The client asks from where the last response ended: it has everything before.
            await self.to_device.delete_acknowledged(user_id, device_id, cfg.since)
        events, next_pos = await self.to_device.messages_for_device(
            user_id, device_id, cfg.since, now.to_device, cfg.limit)
        return {"next_batch": str(next_pos), "events": events}

    async def _e2ee(self, user_id: str, device_id: str, since: SyncToken | None, now: SyncToken
                    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.keys is not None:
            # Always present: clients read absence as "no keys left" (element-android#3725).
            out["device_one_time_keys_count"] = dict(
                await self.keys.one_time_key_counts(user_id, device_id))
            out["device_unused_fallback_key_types"] = list(
                await self.keys.unused_fallback_key_types(user_id, device_id))
        if since is not None and self.device_lists is not None:
            changed, left = await self.device_lists.device_list_changes(
                user_id, since.device_lists, now.device_lists)
            out["device_lists"] = {"changed": sorted(changed), "left": sorted(left)}
        return out

    async def _account_data(self, user_id: str, scoped: set[str], since: SyncToken | None,
                            now: SyncToken, prev: ConnectionState, new: ConnectionState
                            ) -> dict[str, Any]:
        after = None if since is None else since.account_data
        glob = await self.account_data.get_global_changes(user_id, after, now.account_data)
        per_room = await _by_status(
            scoped, since, after, prev.account_data,
            lambda ids, frm: self.account_data.get_room_changes(user_id, ids, frm, now.account_data))
        for room_id in scoped:
            new.account_data[room_id] = None
        if since is not None:
            # Rooms out of the windows keep their news for when they come back.
            out_of_scope = [r for r, s in prev.account_data.items() if s is None and r not in scoped]
            if out_of_scope:
                missed = await self.account_data.get_room_changes(user_id, out_of_scope,
                                                                  since.account_data, now.account_data)
                for room_id in missed:
                    new.account_data[room_id] = since.account_data
        return {"global": [{"type": t, "content": c} for t, c in glob.items()],
                "rooms": {r: [{"type": t, "content": c} for t, c in data.items()]
                          for r, data in per_room.items() if data}}

    async def _receipts(self, user_id: str, scoped: set[str], since: SyncToken | None,
                        now: SyncToken, results: Mapping[str, RoomResult], prev: ConnectionState,
                        new: ConnectionState) -> dict[str, dict[str, Any]]:
        assert self.receipts is not None
        receipts = self.receipts
        # A room sent from scratch (or with an expanded timeline) gets its receipts afresh.
        resend = {r for r in scoped if r in results and (results[r].initial or results[r].expanded)}
        statuses = {r: s for r, s in prev.receipts.items() if r not in resend}
        after = None if since is None else since.receipts
        by_room = await _by_status(
            scoped, since, after, statuses,
            lambda ids, frm: receipts.receipts_for_rooms(ids, frm, now.receipts, user_id))
        initial = scoped if since is None else {r for r in scoped if r not in statuses}
        out: dict[str, dict[str, Any]] = {}
        for room_id, events in by_room.items():
            content = _merge_receipts(events)
            if room_id in initial:
                # As on an initial /sync: the timeline's receipts and the user's own.
                shown = set(results[room_id].timeline_event_ids) if room_id in results else set()
                content = _only_relevant(content, shown, user_id)
            if content:
                out[room_id] = {"type": "m.receipt", "content": content}
        for room_id in scoped:
            new.receipts[room_id] = None
        if since is not None:
            out_of_scope = [r for r, s in prev.receipts.items() if s is None and r not in scoped]
            if out_of_scope:
                missed = await receipts.receipts_for_rooms(out_of_scope, since.receipts,
                                                           now.receipts, user_id)
                for room_id in missed:
                    new.receipts[room_id] = since.receipts
        return out


def _scoped(scope: ExtensionScope, rooms: InterestedRooms) -> set[str]:
    """The rooms of the response's windows that an extension's lists/rooms select."""
    out: set[str] = set()
    for name in scope.lists:
        if name == WILDCARD:
            for ids in rooms.list_rooms.values():
                out.update(ids)
        else:
            out.update(rooms.list_rooms.get(name, ()))
    for room_id in scope.rooms:
        if room_id == WILDCARD:
            out.update(rooms.subscribed)
        elif room_id in rooms.subscribed:
            out.add(room_id)
    return out


async def _by_status(rooms: set[str], since: SyncToken | None, live_from: int | None,
                     statuses: Mapping[str, int | None],
                     fetch: Callable[[list[str], int | None], Awaitable[dict[str, Any]]]
                     ) -> dict[str, Any]:
    """Fetch per room from where the connection left it: nothing sent yet (or no ``since``):
    everything; live: from ``live_from``; sent up to an older position: from there."""
    groups: dict[int | None, list[str]] = {}
    for room_id in sorted(rooms):
        if since is None or room_id not in statuses:
            frm = None
        else:
            status = statuses[room_id]
            frm = live_from if status is None else status
        groups.setdefault(frm, []).append(room_id)
    out: dict[str, Any] = {}
    for frm, ids in groups.items():
        out.update(await fetch(ids, frm))
    return out


def _merge_receipts(events: list[dict[str, Any]]) -> dict[str, Any]:
    """One m.receipt content from several (later ones win a shared event/type/user slot)."""
    content: dict[str, Any] = {}
    for ev in events:
        for event_id, by_type in ev.get("content", {}).items():
            for rtype, by_user in by_type.items():
                content.setdefault(event_id, {}).setdefault(rtype, {}).update(by_user)
    return content


def _only_relevant(content: dict[str, Any], event_ids: set[str], user_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for event_id, by_type in content.items():
        for rtype, by_user in by_type.items():
            users = by_user if event_id in event_ids else (
                {user_id: by_user[user_id]} if user_id in by_user else {})
            if users:
                out.setdefault(event_id, {})[rtype] = users
    return out

