"""PUT /sendToDevice/{eventType}/{txnId}: messages to other devices, delivered by /sync."""

from __future__ import annotations

from typing import Any

from homeserver.api.client.rooms import check_type_and_key
from homeserver.e2ee.to_device import Messages, ToDeviceService
from homeserver.http.errors import MatrixError, bad_json
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.identifiers import is_valid_user_id

MAX_DEVICE_ID_BYTES = 255
MAX_TXN_ID_BYTES = 255


def parse_messages(data: Any) -> Messages:
    """Check the ``messages`` map: {user_id: {device_id or '*': object}}; raise on any defect."""
    if not isinstance(data, dict):
        raise bad_json("'messages' must be an object")
    for user_id, by_device in data.items():
        if not is_valid_user_id(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user id in messages: {user_id!r}")
        if not isinstance(by_device, dict):
            raise bad_json(f"messages[{user_id!r}] must be an object")
        for device_id, content in by_device.items():
            if not device_id or len(device_id.encode("utf-8")) > MAX_DEVICE_ID_BYTES:
                raise MatrixError(400, "M_INVALID_PARAM", "Invalid device id in messages")
            if not isinstance(content, dict):
                raise bad_json(f"messages[{user_id!r}][{device_id!r}] must be an object")
    return data


class ToDeviceApi:
    def __init__(self, service: ToDeviceService) -> None:
        self.service = service

    def register(self, router: Router) -> None:
        router.client("PUT", "/sendToDevice/{eventType}/{txnId}", self.send, allow_guest=True)

    async def send(self, req: HttpRequest, eventType: str, txnId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_type_and_key(eventType)
        if not txnId or len(txnId.encode("utf-8")) > MAX_TXN_ID_BYTES:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid transaction id")
        messages = parse_messages(req.json().dict("messages", required=True))
        await self.service.send(req.requester.user_id, req.requester.device_id, eventType, txnId,
                                messages)
        return 200, {}
