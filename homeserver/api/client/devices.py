"""/devices and /delete_devices: the sessions a user can review and revoke."""

from __future__ import annotations

from typing import Any

from homeserver.accounts.sessions import SessionService
from homeserver.accounts.uia import PASSWORD, UserInteractiveAuth
from homeserver.http.errors import MatrixError
from homeserver.http.jsonbody import JsonObject
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from storage.accounts import DeviceRecord


def device_json(d: DeviceRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"device_id": d.device_id}
    if d.display_name is not None:
        out["display_name"] = d.display_name
    if d.last_seen_ip is not None:
        out["last_seen_ip"] = d.last_seen_ip
    if d.last_seen_ts is not None:
        out["last_seen_ts"] = d.last_seen_ts
    if d.last_seen_user_agent is not None:
        out["last_seen_user_agent"] = d.last_seen_user_agent
    return out


class DevicesApi:
    def __init__(self, sessions: SessionService, uia: UserInteractiveAuth) -> None:
        self.sessions = sessions
        self.uia = uia

    def register(self, router: Router) -> None:
        router.client("GET", "/devices", self.list_devices, allow_guest=True)
        router.client("GET", "/devices/{deviceId}", self.get_device, allow_guest=True)
        router.client("PUT", "/devices/{deviceId}", self.put_device, allow_guest=True)
        router.client("DELETE", "/devices/{deviceId}", self.delete_device)
        router.client("POST", "/delete_devices", self.delete_devices)

    async def list_devices(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        devices = await self.sessions.list_devices(req.requester.user_id)
        return 200, {"devices": [device_json(d) for d in devices]}

    async def get_device(self, req: HttpRequest, deviceId: str) -> tuple[int, Any]:
        assert req.requester is not None
        return 200, device_json(await self.sessions.get_device(req.requester.user_id, deviceId))

    async def put_device(self, req: HttpRequest, deviceId: str) -> tuple[int, Any]:
        assert req.requester is not None
        body = req.json()
        name = body.str("display_name")
        await self.sessions.rename_device(req.requester.user_id, deviceId, name)
        return 200, {}

    async def delete_device(self, req: HttpRequest, deviceId: str) -> tuple[int, Any]:
        assert req.requester is not None
        body = req.json(allow_empty=True)
        # An unknown device is not an error: the spec answers 200 for "had been removed previously".
        _, session = await self.uia.check(f"delete_device {deviceId}", [[PASSWORD]], body,
                                          user_id=req.requester.user_id)
        await self.sessions.delete_devices(req.requester.user_id, [deviceId])
        await self.uia.finish(session)
        return 200, {}

    async def delete_devices(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        body = req.json()
        devices = body.str_list("devices", required=True)
        if len(devices) > 1000:
            raise MatrixError(400, "M_INVALID_PARAM", "At most 1000 devices at a time")
        merged, session = await self.uia.check("delete_devices", [[PASSWORD]], body,
                                               user_id=req.requester.user_id)
        devices = JsonObject(merged).str_list("devices", required=True)
        await self.sessions.delete_devices(req.requester.user_id, devices)
        await self.uia.finish(session)
        return 200, {}
