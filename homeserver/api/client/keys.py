"""/keys/*: end-to-end encryption key upload, query, claim, changes and cross-signing."""

from __future__ import annotations

from typing import Any

from homeserver.accounts.uia import PASSWORD, UserInteractiveAuth
from homeserver.e2ee.cross_signing import CrossSigningService
from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.e2ee.keys import KeyService
from homeserver.http.errors import invalid_param
from homeserver.http.jsonbody import JsonObject
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.identifiers import is_valid_user_id
from homeserver.sync.tokens import SyncToken

MAX_USERS = 10_000  # users per /keys/query or /keys/claim request


def _user_map(body: JsonObject, key: str) -> dict[str, Any]:
    value = body.dict(key, required=True)
    if len(value) > MAX_USERS:
        raise invalid_param(f"'{key}' names more than {MAX_USERS} users")
    for user_id in value:
        if not is_valid_user_id(user_id):
            raise invalid_param(f"'{key}': invalid user id {user_id!r}")
    return value


class KeysApi:
    def __init__(self, keys: KeyService, cross_signing: CrossSigningService,
                 device_lists: DeviceListTracker, uia: UserInteractiveAuth) -> None:
        self.keys = keys
        self.cross_signing = cross_signing
        self.device_lists = device_lists
        self.uia = uia

    def register(self, router: Router) -> None:
        router.client("POST", "/keys/upload", self.upload, allow_guest=True)
        router.client("POST", "/keys/query", self.query, allow_guest=True)
        router.client("POST", "/keys/claim", self.claim, allow_guest=True)
        router.client("GET", "/keys/changes", self.changes)
        router.client("POST", "/keys/device_signing/upload", self.device_signing_upload)
        router.client("POST", "/keys/signatures/upload", self.signatures_upload)

    async def upload(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        body = req.json()
        counts = await self.keys.upload(req.requester.user_id, req.requester.device_id,
                                        body.dict("device_keys"), body.dict("one_time_keys"),
                                        body.dict("fallback_keys"))
        return 200, {"one_time_key_counts": counts}

    async def query(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        body = req.json()
        body.int("timeout")
        wanted = _user_map(body, "device_keys")
        for user_id, devices in wanted.items():
            if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
                raise invalid_param(f"device_keys[{user_id!r}] must be an array of device ids")
        return 200, await self.keys.query(req.requester.user_id, wanted)

    async def claim(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        body = req.json()
        body.int("timeout")
        wanted = _user_map(body, "one_time_keys")
        for user_id, devices in wanted.items():
            if not isinstance(devices, dict) or not all(isinstance(a, str) for a in devices.values()):
                raise invalid_param(f"one_time_keys[{user_id!r}] must map device ids to algorithms")
        return 200, await self.keys.claim(wanted)

    async def changes(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        from_token = SyncToken.parse(req.query("from", required=True) or "")
        to_token = SyncToken.parse(req.query("to", required=True) or "")
        changed, left = await self.device_lists.device_list_changes(
            req.requester.user_id, from_token.device_lists, to_token.device_lists)
        return 200, {"changed": sorted(changed), "left": sorted(left)}

    async def device_signing_upload(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        user_id = req.requester.user_id
        body = req.json()
        request = {k: v for k, v in body.data.items() if k != "auth"}
        prepared = await self.cross_signing.prepare_upload(user_id, request)
        session = None
        if prepared.needs_auth:
            # The body that was authorised (the session's first) is the one that gets stored.
            merged, session = await self.uia.check("device_signing_upload", [[PASSWORD]], body,
                                                   user_id=user_id)
            prepared = await self.cross_signing.prepare_upload(user_id, merged)
        await self.cross_signing.store_upload(user_id, prepared)
        if session is not None:
            await self.uia.finish(session)
        return 200, {}

    async def signatures_upload(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        body = req.json()
        for user_id, objs in body.data.items():
            if not isinstance(objs, dict) or not all(isinstance(o, dict) for o in objs.values()):
                raise invalid_param(f"{user_id!r} must map key ids to signed objects")
        failures = await self.cross_signing.upload_signatures(
            req.requester.user_id, body.data, self.keys.is_local)
        return 200, {"failures": failures}
