"""POST /rooms/{roomId}/receipt/{receiptType}/{eventId} and POST /rooms/{roomId}/read_markers."""

from __future__ import annotations

from typing import Any

from homeserver.api.client.rooms import check_room_id
from homeserver.ephemeral.receipts import (FULLY_READ, READ, READ_PRIVATE, ReceiptService,
                                           check_receipt_request)
from homeserver.http.errors import invalid_param
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest


class ReceiptsApi:
    def __init__(self, receipts: ReceiptService) -> None:
        self.receipts = receipts

    def register(self, router: Router) -> None:
        router.client("POST", "/rooms/{roomId}/receipt/{receiptType}/{eventId}", self.post_receipt)
        router.client("POST", "/rooms/{roomId}/read_markers", self.post_read_markers)

    async def post_receipt(self, req: HttpRequest, roomId: str, receiptType: str,
                           eventId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        # The spec asks for a body ({} at least); older clients send none, which means {}.
        body = req.json(allow_empty=True)
        thread_id = body.data.get("thread_id")
        if "thread_id" in body and thread_id is None:
            raise invalid_param("thread_id field must be a non-empty string")
        check_receipt_request(receiptType, thread_id)
        user_id = req.requester.user_id
        if receiptType == FULLY_READ:
            # "effectively calls /read_markers internally"
            await self.receipts.set_read_markers(user_id, roomId, {FULLY_READ: eventId})
        else:
            await self.receipts.post_receipt(user_id, roomId, receiptType, eventId, thread_id)
        return 200, {}

    async def post_read_markers(self, req: HttpRequest, roomId: str) -> tuple[int, Any]:
        assert req.requester is not None
        check_room_id(roomId)
        body = req.json(allow_empty=True)
        markers = {key: value for key in (FULLY_READ, READ, READ_PRIVATE)
                   if (value := body.str(key)) is not None}
        await self.receipts.set_read_markers(req.requester.user_id, roomId, markers)
        return 200, {}
