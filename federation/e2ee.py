"""End-to-end encryption across servers (spec: server-server "End-to-End Encryption" and
"Device Management"): device and cross-signing keys queried and one-time keys claimed from a
user's own server, to-device messages as m.direct_to_device EDUs, device list changes as
m.device_list_update / m.signing_key_update EDUs. Keys stay opaque: they are passed on as the
owner's server signed them (clients check the signatures).
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from typing import Any

from federation.server_visibility import server_of
from homeserver.http.errors import MatrixError
from homeserver.http.router import AUTH_FEDERATION, Router
from homeserver.http.site import HttpRequest
from storage.events import EventStore

logger = logging.getLogger(__name__)

V1 = "/_matrix/federation/v1"


def _failure(e: Exception) -> dict[str, Any]:
    status = getattr(e, "status", None)
    return {"status": status if isinstance(status, int) else 503, "message": str(e)[:300]}


class E2eeFederation:
    def __init__(self, server_name: str, client: Any, sender: Any, events: EventStore,
                 keys: Any, to_device: Any, device_lists: Any, e2e_store: Any) -> None:
        self.server_name = server_name
        self.client = client
        self.sender = sender
        self.events = events
        self.keys = keys
        self.to_device = to_device
        self.device_lists = device_lists
        self.e2e_store = e2e_store

    def register(self, router: Router) -> None:
        a = AUTH_FEDERATION
        router.add("POST", f"{V1}/user/keys/query", self.keys_query, auth=a)
        router.add("POST", f"{V1}/user/keys/claim", self.keys_claim, auth=a)
        router.add("GET", f"{V1}/user/devices/{{userId}}", self.user_devices, auth=a)

    def _local(self, user_id: Any) -> bool:
        return isinstance(user_id, str) and server_of(user_id) == self.server_name

    # --- asking other servers (KeyService and ToDeviceService call these) -----------------------

    async def query_remote(self, wanted: dict[str, list[str]]) -> dict[str, Any]:
        """/keys/query for remote users: one request per server, merged; a server that cannot
        be reached is listed in failures."""
        by_server: dict[str, dict[str, list[str]]] = defaultdict(dict)
        for user, devices in wanted.items():
            by_server[server_of(user)][user] = devices
        out: dict[str, Any] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {},
                               "failures": {}}
        for server, users in by_server.items():
            try:
                body = await self.client.post_json(server, f"{V1}/user/keys/query",
                                                   {"device_keys": users})
            except Exception as e:  # noqa: BLE001
                logger.info("keys query to %s failed: %s", server, e)
                out["failures"][server] = _failure(e)
                continue
            for section in ("device_keys", "master_keys", "self_signing_keys"):
                got = body.get(section) if isinstance(body, dict) else None
                for user, value in (got or {}).items():
                    if user in users and isinstance(value, dict):
                        out[section][user] = value
        return out

    async def claim_remote(self, wanted: dict[str, dict[str, str]]) -> dict[str, Any]:
        by_server: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
        for user, devices in wanted.items():
            by_server[server_of(user)][user] = devices
        out: dict[str, Any] = {"one_time_keys": {}, "failures": {}}
        for server, users in by_server.items():
            try:
                body = await self.client.post_json(server, f"{V1}/user/keys/claim",
                                                   {"one_time_keys": users})
            except Exception as e:  # noqa: BLE001
                logger.info("keys claim to %s failed: %s", server, e)
                out["failures"][server] = _failure(e)
                continue
            for user, devices in (body.get("one_time_keys") or {}).items() \
                    if isinstance(body, dict) else []:
                if user in users and isinstance(devices, dict):
                    out["one_time_keys"][user] = devices
        return out

    async def send_to_device(self, sender: str, event_type: str,
                             messages: dict[str, dict[str, Any]]) -> None:
        """Queue m.direct_to_device EDUs, one per destination server."""
        by_server: dict[str, dict[str, Any]] = defaultdict(dict)
        for user, by_device in messages.items():
            by_server[server_of(user)][user] = by_device
        for server, msgs in by_server.items():
            await self.sender.send_edu(server, "m.direct_to_device", {
                "sender": sender, "type": event_type,
                "message_id": secrets.token_urlsafe(16), "messages": msgs})

    async def local_devices_changed(self, user_id: str, device_id: str | None,
                                    stream_id: int, deleted: bool = False) -> None:
        """Tell every server sharing a room with our user that its device list moved."""
        if not self._local(user_id):
            return
        servers: set[str] = set()
        for room_id in await self.events.get_rooms_for_user(user_id):
            servers |= {server_of(u) for u in await self.events.get_members(room_id, ("join",))}
        servers.discard(self.server_name)
        if not servers:
            return
        content: dict[str, Any] = {"user_id": user_id, "device_id": device_id or "",
                                   "stream_id": stream_id, "prev_id": [], "deleted": deleted}
        for server in servers:
            await self.sender.send_edu(server, "m.device_list_update", content,
                                       key=f"{user_id}/{device_id or ''}")

    # --- EDUs from other servers ----------------------------------------------------------------

    async def direct_to_device_edu(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        sender, etype = content.get("sender"), content.get("type")
        messages, message_id = content.get("messages"), content.get("message_id")
        if not isinstance(sender, str) or server_of(sender) != origin or not isinstance(etype, str) \
                or not isinstance(messages, dict) or not isinstance(message_id, str):
            return
        local = {u: d for u, d in messages.items() if self._local(u) and isinstance(d, dict)}
        if local:
            await self.to_device.deliver_remote(origin, sender, etype, message_id, local)

    async def device_list_update_edu(self, origin: str, content: Any) -> None:
        if isinstance(content, dict) and isinstance(content.get("user_id"), str) \
                and server_of(content["user_id"]) == origin:
            await self.device_lists.record_change(content["user_id"])

    # --- answering other servers ----------------------------------------------------------------

    async def keys_query(self, req: HttpRequest) -> tuple[int, Any]:
        body = req.json().data
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict) or not all(
                isinstance(v, list) and all(isinstance(d, str) for d in v) for v in wanted.values()):
            raise MatrixError(400, "M_BAD_JSON", "device_keys must map user ids to device id lists")
        local = {u: d for u, d in wanted.items() if self._local(u)}
        result = await self.keys.query("", local) if local else {
            "device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
        return 200, {k: result.get(k, {}) for k in ("device_keys", "master_keys",
                                                     "self_signing_keys")}

    async def keys_claim(self, req: HttpRequest) -> tuple[int, Any]:
        body = req.json().data
        wanted = body.get("one_time_keys")
        if not isinstance(wanted, dict) or not all(
                isinstance(v, dict) and all(isinstance(a, str) for a in v.values())
                for v in wanted.values()):
            raise MatrixError(400, "M_BAD_JSON", "one_time_keys must map users to device algorithms")
        local = {u: d for u, d in wanted.items() if self._local(u)}
        result = await self.keys.claim(local) if local else {"one_time_keys": {}}
        return 200, {"one_time_keys": result.get("one_time_keys", {})}

    async def user_devices(self, req: HttpRequest, userId: str) -> tuple[int, Any]:
        if not self._local(userId):
            raise MatrixError(400, "M_INVALID_PARAM", f"{userId} is not a user of this server")
        result = await self.keys.query("", {userId: []})
        devices = []
        for device_id, keys in result.get("device_keys", {}).get(userId, {}).items():
            entry: dict[str, Any] = {"device_id": device_id, "keys": keys}
            name = (keys.get("unsigned") or {}).get("device_display_name")
            if isinstance(name, str):
                entry["device_display_name"] = name
            devices.append(entry)
        out: dict[str, Any] = {"user_id": userId, "stream_id": self.device_lists.current_position(),
                               "devices": devices}
        for section, key in (("master_keys", "master_key"), ("self_signing_keys", "self_signing_key")):
            value = result.get(section, {}).get(userId)
            if value:
                out[key] = value
        return 200, out

